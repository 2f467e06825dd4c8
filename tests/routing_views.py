"""Views for the routing and pinning tests (mounted under /routing/ in tests/urls.py)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from resilient_db.routers import context, db_write
from tests.testapp.models import Item


def write(request: HttpRequest) -> HttpResponse:
    """Create an Item (POST or GET: the method does not matter, the write does)."""
    key = request.GET.get("key") or request.POST.get("key") or "k"
    Item.objects.update_or_create(key=key, defaults={"value": int(request.GET.get("value", 1))})
    return HttpResponse("written")


def nothing(request: HttpRequest) -> HttpResponse:
    """Write nothing, whatever the method."""
    return HttpResponse("nothing")


def read(request: HttpRequest) -> JsonResponse:
    """Return whether the Item exists, its value, and the alias the read used."""
    qs = Item.objects.filter(key=request.GET["key"])
    db = qs.db  # routed once, so the answer names the database that was read
    row = qs.using(db).values_list("value", flat=True).first()
    return JsonResponse({"db": db, "found": row is not None, "value": row})


async def aread(request: HttpRequest) -> JsonResponse:
    """Async version of :func:`read`."""
    qs = Item.objects.filter(key=request.GET["key"])
    db = qs.db
    row = await qs.using(db).values_list("value", flat=True).afirst()
    return JsonResponse({"db": db, "found": row is not None, "value": row})


def fake_write(request: HttpRequest) -> HttpResponse:
    """Record a write on the alias given, without a database (cookie logic tests)."""
    context.note_write(request.GET.get("alias", "default"))
    return HttpResponse("noted")


@db_write
def marked(request: HttpRequest) -> HttpResponse:
    """A view marked db_write that writes nothing."""
    return HttpResponse("marked")


def opt_out(request: HttpRequest) -> HttpResponse:
    """Write, but opt out of the pinning cookie the way django-multidb-router documents."""
    context.note_write("default")
    response = HttpResponse("opted out")
    response._db_write = False  # type: ignore[attr-defined]
    return response


def pin_state(request: HttpRequest) -> JsonResponse:
    """Return the pins the request arrived with."""
    unit = context.current_unit()
    pins = dict(unit.pins) if unit is not None else {}
    return JsonResponse({"pins": pins})


urlpatterns = [
    path("write/", write),
    path("nothing/", nothing),
    path("read/", read),
    path("aread/", aread),
    path("fake-write/", fake_write),
    path("marked/", marked),
    path("opt-out/", opt_out),
    path("pins/", pin_state),
]


class TestGroupRouter:
    """Send testapp writes to the primary named by ``settings.ROUTING_TEST_PRIMARY``."""

    def db_for_write(self, model: object, **hints: object) -> str | None:
        from django.conf import settings

        return getattr(settings, "ROUTING_TEST_PRIMARY", None)
