"""Memory over a long run: 100,000 queries and 10,000 requests must not grow memory.

Both tracemalloc (Python allocations) and RSS (the whole process, including the
drivers' C memory) are sampled after a warm-up and then at regular points; the
figure of merit is the growth from the first sample after warm-up to the end.
The queries run on the resilient PostgreSQL and MariaDB backends; the requests go
through Django's WSGI handler with the pinning and health middleware.

Run: ``python benchmarks/bench_memory.py`` (``RESILIENT_DB_BENCH_QUICK=1``: a tenth).
"""

from __future__ import annotations

import gc
import io
import re
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common as c


def _short_path(line: str) -> str:
    """Drop the machine-specific part of a traceback path (site-packages, the checkout)."""
    line = re.sub(r"^\S*/site-packages/", "", line)
    line = re.sub(r"^\S*/lib/python3\.\d+/", "stdlib/", line)
    return re.sub(r"^\S*/(benchmarks/)", r"\1", line)


def rss_kib() -> int:
    """Return the resident set size of this process in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def soak(name: str, fn: Callable[[], object], total: int, samples: int = 10) -> dict[str, Any]:
    """Run ``fn`` ``total`` times; sample memory after a 10 % warm-up and at each tenth."""
    warm = total // 10
    for _ in range(warm):
        fn()
    gc.collect()
    tracemalloc.start(10)
    first = tracemalloc.take_snapshot()
    base_py, base_rss = tracemalloc.get_traced_memory()[0], rss_kib()
    points = []
    step = (total - warm) // samples
    for _ in range(samples):
        for _op in range(step):
            fn()
        gc.collect()
        points.append((tracemalloc.get_traced_memory()[0] - base_py, rss_kib() - base_rss))
    last = tracemalloc.take_snapshot()
    top = last.compare_to(first, "lineno")[:5]
    tracemalloc.stop()
    return {
        "name": name,
        "operations": total,
        "python_growth_bytes": points[-1][0],
        "rss_growth_kib": points[-1][1],
        "python_growth_second_half_bytes": points[-1][0] - points[samples // 2 - 1][0],
        "points": points,
        "top_growth": [_short_path(str(s)) for s in top],
    }


def main() -> int:
    """Run the benchmark, then drop what it created."""
    try:
        return run()
    finally:
        c.cleanup()


def run() -> int:
    """Run the memory benchmark and write results/bench_memory.md."""
    c.configure(
        {
            "default": c.bed_alias(c.PG, "pg_primary", stock=False),
            "mysql": c.bed_alias(c.MARIA, "maria_primary", stock=False),
        },
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[
            "resilient_db.middleware.PinningMiddleware",
            "resilient_db.middleware.health.HealthMiddleware",
        ],
    )
    from django.core.handlers.wsgi import WSGIHandler
    from django.http import HttpRequest, HttpResponse
    from django.test import RequestFactory
    from django.urls import path
    from tests.testapp.models import Item

    for alias in ("default", "mysql"):
        c.ensure_tables(alias, Item)
        Item.objects.using(alias).get_or_create(key="bench-memory", defaults={"value": 1})

    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(str(Item.objects.get(key="bench-memory").value))

    sys.modules[__name__].urlpatterns = [path("item/", view)]  # type: ignore[attr-defined]
    handler = WSGIHandler()
    environ = RequestFactory()._base_environ(PATH_INFO="/item/", REQUEST_METHOD="GET")

    def request() -> None:
        environ["wsgi.input"] = io.BytesIO(b"")
        response = handler(environ, lambda status, headers, exc_info=None: None)
        b"".join(response)
        response.close()

    scale = 10 if c.quick() else 1
    results = [
        soak("ORM reads, PostgreSQL (psycopg 3)",
             lambda: Item.objects.using("default").get(key="bench-memory"), 100_000 // scale),
        soak("ORM reads, MariaDB (mysqlclient)",
             lambda: Item.objects.using("mysql").get(key="bench-memory"), 100_000 // scale),
        soak("WSGI requests, pinning + health middleware", request, 10_000 // scale),
    ]
    rows = [
        [r["name"], f"{r['operations']:,}", f"{r['python_growth_bytes'] / 1024:+.1f} KiB",
         f"{r['python_growth_second_half_bytes'] / 1024:+.1f} KiB", f"{r['rss_growth_kib']:+d} KiB"]
        for r in results
    ]
    md = (
        "Growth measured from the first sample after a 10 % warm-up to the end of the run "
        "(tracemalloc for Python objects, RSS for the whole process). A leak shows as steady "
        "growth in the second half; a few KiB of noise is the allocator.\n\n"
        + c.table(["workload", "operations", "Python heap growth", "of which second half",
                   "RSS growth"], rows)
    )
    c.write_result("bench_memory", "Memory over a long run", md, {"results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
