"""Per-query overhead of the resilient backends against Django's stock backends.

Two aliases reach the same server, one with the stock ENGINE and one with the
resilient one. Three workloads, each timed stock against resilient in
alternating blocks in one process; the figure is the median of per-block ratios
resilient / stock, with min/max:

* read: a single-row ORM read, ``Item.objects.get(pk=...)`` (20,000 per case);
* write: a small write in autocommit, ``filter(pk=...).update(value=...)``
  (10,000 per case);
* transaction: a short transaction, ``atomic()`` around a read and an update
  of one row (10,000 per case).

Three cells: PostgreSQL with psycopg 3, PostgreSQL with psycopg2 (psycopg 3
hidden from the process so Django picks psycopg2), and MariaDB with
mysqlclient. Goal: <= 1.05.

Run: ``python benchmarks/bench_backends.py`` (the test bed must be up).
``RESILIENT_DB_BENCH_QUICK=1`` for a short run. One cell only:
``python benchmarks/bench_backends.py --cell pg-psycopg2``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import _common as c

CELLS = {
    "pg-psycopg3": (c.PG, "pg_primary"),
    "pg-psycopg2": (c.PG, "pg_primary"),
    "mariadb": (c.MARIA, "maria_primary"),
}
GOAL = 1.05


class _HidePsycopg3:
    """Meta-path finder that makes ``import psycopg`` fail, as if only psycopg2 were installed."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "psycopg" or name.startswith(("psycopg.", "psycopg_")):
            raise ImportError(f"{name} hidden for the psycopg2 cell")
        return None


def run_cell(cell: str) -> dict[str, object]:
    """Time one cell in this process and return its figures."""
    if cell == "pg-psycopg2":
        sys.meta_path.insert(0, _HidePsycopg3())  # type: ignore[arg-type]
    vendor, server = CELLS[cell]
    c.configure(
        {
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
            "stock": c.bed_alias(vendor, server, stock=True, CONN_MAX_AGE=None),
            "resilient": c.bed_alias(vendor, server, stock=False, CONN_MAX_AGE=None),
        }
    )
    from django.db import connections, transaction
    from tests.testapp.models import Item

    c.ensure_tables("stock", Item)
    keys = ("bench-read", "bench-stock", "bench-resilient")
    try:
        Item.objects.using("stock").filter(key__in=keys).delete()
        pk = Item.objects.using("stock").create(key=keys[0], value=1).pk
        # Each side writes a row of its own: the same work, no lock shared between them.
        rows = {
            side: Item.objects.using("stock").create(key=key, value=0).pk
            for side, key in (("stock", keys[1]), ("resilient", keys[2]))
        }
        counter = iter(range(10**9))

        def read(alias: str) -> object:
            return Item.objects.using(alias).get(pk=pk)

        def write(alias: str) -> object:
            return Item.objects.using(alias).filter(pk=rows[alias]).update(value=next(counter))

        def short_transaction(alias: str) -> object:
            with transaction.atomic(using=alias):
                Item.objects.using(alias).get(pk=pk)
                return write(alias)

        workloads = {"read": read, "write": write, "transaction": short_transaction}
        quick = c.quick()
        sizes = {"read": (8, 250) if quick else (40, 500)}
        sizes["write"] = sizes["transaction"] = (8, 125) if quick else (40, 250)
        figures = []
        for workload, fn in workloads.items():
            blocks, ops = sizes[workload]
            samples = c.alternate(
                {"stock": lambda f=fn: f("stock"), "resilient": lambda f=fn: f("resilient")},
                blocks=blocks, ops=ops, warmup=200,
            )
            r = c.ratio(samples["resilient"], samples["stock"])
            figures.append({
                "workload": workload, "ops_per_case": blocks * ops,
                "stock_us": c.stats(samples["stock"]).median * 1e6,
                "resilient_us": c.stats(samples["resilient"]).median * 1e6,
                "ratio": r.median, "ratio_low": r.low, "ratio_high": r.high,
            })
        driver = type(connections["resilient"].connection).__module__.split(".")[0]
        Item.objects.using("stock").filter(key__in=keys).delete()
        return {"cell": cell, "driver": driver, "workloads": figures}
    finally:
        c.cleanup()


def main() -> int:
    """Run every cell in its own process and write results/bench_backends.md."""
    if "--cell" in sys.argv:
        cell = sys.argv[sys.argv.index("--cell") + 1]
        if "--child" in sys.argv:
            print(json.dumps(run_cell(cell)))
            return 0
        cells = [cell]
    else:
        cells = list(CELLS)
    results = []
    for cell in cells:
        out = subprocess.run(
            [sys.executable, __file__, "--cell", cell, "--child"],
            capture_output=True, text=True, check=False,
        )
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return out.returncode
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = [
        [
            str(r["cell"]), str(r["driver"]), str(w["workload"]), str(w["ops_per_case"]),
            f"{w['stock_us']:.1f}", f"{w['resilient_us']:.1f}",
            f"{w['ratio']:.3f} ({w['ratio_low']:.3f}–{w['ratio_high']:.3f})",
            "yes" if float(w["ratio"]) <= GOAL else "NO",
        ]
        for r in results
        for w in r["workloads"]  # type: ignore[attr-defined]
    ]
    markdown = (
        "Stock Django (persistent connections, CONN_HEALTH_CHECKS on) against the "
        "resilient backend on the same server; alternating blocks in one process; "
        "ratio = median of per-block ratios resilient / stock (min–max over blocks). "
        "read: `get(pk=...)`; write: `filter(pk=...).update(...)` in autocommit; "
        "transaction: `atomic()` around one read and one update.\n\n"
        + c.table(
            ["cell", "driver", "workload", "ops/case", "stock µs", "resilient µs",
             "ratio (min–max)", f"≤ {GOAL}"],
            rows,
        )
    )
    print(markdown)
    c.write_result("bench_backends", "Backends: per-query overhead", markdown,
                   {"results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
