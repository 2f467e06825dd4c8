"""Per-request cost of the middleware, through Django's real WSGI handler.

Each case is a full request (request_started/finished signals, which run Django's
``close_old_connections`` and so the CONN_HEALTH_CHECKS logic, the middleware chain,
a view that reads one row) on PostgreSQL. Cases alternate in blocks in one process:

* stock: Django's own backend, CONN_HEALTH_CHECKS on, no middleware;
* resilient: the resilient backend, no middleware;
* + pinning: ``PinningMiddleware``;
* + health: ``HealthMiddleware`` (when the installed version has it);
* + both.

A second set of cases uses a view that touches no database, to isolate the
middleware's own cost.

Run: ``python benchmarks/bench_middleware.py`` (the test bed must be up).
"""

from __future__ import annotations

import importlib
import io
import sys
from typing import Any

import _common as c


def main() -> int:
    """Run the benchmark, then drop what it created."""
    try:
        return run()
    finally:
        c.cleanup()


def run() -> int:
    """Run the benchmark and write results/bench_middleware.md."""
    c.configure(
        {
            "default": c.bed_alias(c.PG, "pg_primary", stock=False),
            "stock": c.bed_alias(c.PG, "pg_primary", stock=True),
        },
        ROOT_URLCONF=__name__,
    )
    from django.core.handlers.wsgi import WSGIHandler
    from django.http import HttpRequest, HttpResponse
    from django.test import RequestFactory, override_settings
    from django.urls import path
    from tests.testapp.models import Item

    c.ensure_tables("default", Item)
    Item.objects.using("default").get_or_create(key="bench-middleware", defaults={"value": 1})

    def view_for(alias: str) -> Any:
        def view(request: HttpRequest) -> HttpResponse:
            item = Item.objects.using(alias).get(key="bench-middleware")
            return HttpResponse(str(item.value))

        return view

    def empty(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    module = sys.modules[__name__]
    module.urlpatterns = [  # type: ignore[attr-defined]
        path("db/default/", view_for("default")),
        path("db/stock/", view_for("stock")),
        path("empty/", empty),
    ]

    stacks: dict[str, list[str]] = {"none": [], "pinning": ["resilient_db.middleware.PinningMiddleware"]}
    try:
        importlib.import_module("resilient_db.middleware.health").HealthMiddleware  # noqa: B018
        stacks["health"] = ["resilient_db.middleware.health.HealthMiddleware"]
        stacks["both"] = stacks["pinning"] + stacks["health"]
    except (ImportError, AttributeError):
        pass

    factory = RequestFactory()

    def request_fn(handler: WSGIHandler, url: str) -> Any:
        environ = factory._base_environ(PATH_INFO=url, REQUEST_METHOD="GET", QUERY_STRING="")
        environ["wsgi.input"] = io.BytesIO(b"")

        def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            if not status.startswith("200"):
                raise RuntimeError(f"{url}: {status}")
            return lambda data: None

        def call() -> None:
            response = handler(environ, start_response)
            b"".join(response)
            response.close()

        return call

    handlers: dict[str, WSGIHandler] = {}
    for name, stack in stacks.items():
        with override_settings(MIDDLEWARE=stack):
            handlers[name] = WSGIHandler()

    blocks, ops = (6, 100) if c.quick() else (20, 300)
    db_cases = {"stock": request_fn(handlers["none"], "/db/stock/")}
    for name, handler in handlers.items():
        db_cases[f"resilient+{name}"] = request_fn(handler, "/db/default/")
    db = c.alternate(db_cases, blocks=blocks, ops=ops)
    empty_cases = {f"{name}": request_fn(h, "/empty/") for name, h in handlers.items()}
    bare = c.alternate(empty_cases, blocks=blocks, ops=ops * 3)

    rows = []
    base = db["stock"]
    for name, samples in db.items():
        rows.append([name, c.stats(samples).us(), "1" if name == "stock" else
                     f"{c.ratio(samples, base).median:.3f} ({c.ratio(samples, base).low:.3f}–{c.ratio(samples, base).high:.3f})"])
    bare_rows = []
    for name, samples in bare.items():
        extra = [a - b for a, b in zip(samples, bare["none"], strict=True)]
        bare_rows.append([name, c.stats(samples).us(), "0" if name == "none" else c.stats(extra).us()])
    md = (
        "A full WSGI request through Django's handler; the view reads one row by key "
        "on PostgreSQL (psycopg 3). Medians over alternating blocks, min–max in brackets.\n\n"
        + c.table(["case", "time per request", "ratio to stock"], rows)
        + "\n\nMiddleware alone (a view that touches no database):\n\n"
        + c.table(["middleware", "time per request", "added over none"], bare_rows)
    )
    c.write_result(
        "bench_middleware",
        "Health and pinning middleware, per request",
        md,
        {"db": db, "bare": bare, "blocks": blocks, "ops": ops},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

