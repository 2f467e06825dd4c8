"""Per-query cost of the stall watchdog: STALL_TIMEOUT set against unset.

Two resilient aliases reach the same server, one with ``STALL_TIMEOUT`` unset
and one with it set (30 s, never reached). Each case runs single-row ORM reads
(``Item.objects.get(pk=...)``) in alternating blocks in one process; the figure
is the median of per-block ratios set / unset. It also times one
register + unregister pair of the watchdog alone.

Run: ``python benchmarks/bench_stall.py`` (the test bed must be up).
``RESILIENT_DB_BENCH_QUICK=1`` for a short run; ``--cell mariadb`` for MariaDB.
"""

from __future__ import annotations

import socket
import sys
import time

import _common as c

CELLS = {"pg-psycopg3": (c.PG, "pg_primary"), "mariadb": (c.MARIA, "maria_primary")}
STALL_TIMEOUT = 30.0


def register_cost(n: int = 200_000) -> float:
    """Return the seconds one register + unregister pair takes (watchdog running)."""
    from resilient_db.backends.stall import watchdog

    dog = watchdog()
    left, right = socket.socketpair()
    with left, right:
        fd = left.fileno()
        began = time.perf_counter()
        for _ in range(n):
            dog.unregister(dog.register(fd, STALL_TIMEOUT))
        return (time.perf_counter() - began) / n


def run_cell(cell: str) -> dict[str, object]:
    """Time one cell in this process and return its figures."""
    vendor, server = CELLS[cell]
    c.configure(
        {
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
            "off": c.bed_alias(vendor, server, stock=False, CONN_MAX_AGE=None),
            "on": c.bed_alias(vendor, server, stock=False, CONN_MAX_AGE=None),
        },
        {"CONNECT_TIMEOUT": 1.0, "CHECK_INTERVAL": 1.0,
         "DATABASES": {"on": {"STALL_TIMEOUT": STALL_TIMEOUT}}},
    )
    from django.db import connections
    from tests.testapp.models import Item

    c.ensure_tables("off", Item)
    try:
        Item.objects.using("off").filter(key="bench").delete()
        pk = Item.objects.using("off").create(key="bench", value=1).pk
        off = Item.objects.using("off")
        on = Item.objects.using("on")
        blocks, ops = (8, 250) if c.quick() else (40, 500)
        samples = c.alternate(
            {"off": lambda: off.get(pk=pk), "on": lambda: on.get(pk=pk)},
            blocks=blocks, ops=ops, warmup=200,
        )
        assert connections["on"].resilience.stall_timeout == STALL_TIMEOUT
        assert connections["off"].resilience.stall_timeout is None
        r = c.ratio(samples["on"], samples["off"])
        pair = register_cost(20_000 if c.quick() else 200_000)
        Item.objects.using("off").filter(key="bench").delete()
        return {
            "cell": cell, "reads_per_case": blocks * ops,
            "off_us": c.stats(samples["off"]).median * 1e6,
            "on_us": c.stats(samples["on"]).median * 1e6,
            "ratio": r.median, "ratio_low": r.low, "ratio_high": r.high,
            "register_unregister_ns": pair * 1e9,
        }
    finally:
        c.cleanup()


def main() -> int:
    """Run one cell (pg-psycopg3 unless ``--cell``) and write results/bench_stall.md."""
    cell = sys.argv[sys.argv.index("--cell") + 1] if "--cell" in sys.argv else "pg-psycopg3"
    r = run_cell(cell)
    markdown = c.table(
        ["cell", "reads/case", "unset µs", "set µs", "ratio (min–max)", "register+unregister ns"],
        [[
            str(r["cell"]), str(r["reads_per_case"]), f"{r['off_us']:.1f}", f"{r['on_us']:.1f}",
            f"{r['ratio']:.3f} ({r['ratio_low']:.3f}–{r['ratio_high']:.3f})",
            f"{r['register_unregister_ns']:.0f}",
        ]],
    )
    print(markdown)
    c.write_result("bench_stall", "Stall watchdog: per-query overhead", markdown, {"results": [r]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
