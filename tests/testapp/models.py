from __future__ import annotations

from django.db import models


class Item(models.Model):
    """A row with a unique key: lets a test prove nothing was written twice."""

    key = models.CharField(max_length=64, unique=True)
    value = models.IntegerField(default=0)

    def __str__(self) -> str:
        return self.key


class Author(models.Model):
    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name


class Book(models.Model):
    title = models.CharField(max_length=100)
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="books")

    def __str__(self) -> str:
        return self.title
