"""One model: an order, identified by a key the client generates."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


def new_key() -> str:
    """Return a fresh client key for an order."""
    return uuid.uuid4().hex


class Order(models.Model):
    """An order. ``key`` is unique so a write that runs twice cannot make two orders."""

    key = models.CharField(max_length=64, unique=True, default=new_key)
    customer = models.CharField(max_length=100)
    item = models.CharField(max_length=100)
    quantity = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.item} for {self.customer}"
