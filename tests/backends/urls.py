"""A view that reads through a given alias and says which target served it."""

from __future__ import annotations

from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.urls import path

from tests.testapp.models import Item


def read(request: HttpRequest, alias: str) -> JsonResponse:
    count = Item.objects.using(alias).count()
    target = connections[alias].resilience.target
    return JsonResponse({"count": count, "port": target.port if target else None})


urlpatterns = [path("read/<str:alias>/", read)]
