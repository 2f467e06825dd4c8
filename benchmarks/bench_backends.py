"""Per-query overhead of the resilient backends against Django's stock backends.

Two aliases reach the same server, one with the stock ENGINE and one with the
resilient one. Each case runs single-row ORM reads (``Item.objects.get(pk=...)``)
in alternating blocks in one process (20,000 reads per case by default); the
figure is the median of per-block ratios resilient / stock. Three cells:
PostgreSQL with psycopg 3, PostgreSQL with psycopg2 (psycopg 3 hidden from the
process so Django picks psycopg2), and MariaDB with mysqlclient. Goal: <= 1.05.

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
    from django.db import connections
    from tests.testapp.models import Item

    c.ensure_tables("stock", Item)
    try:
        Item.objects.using("stock").filter(key="bench").delete()
        pk = Item.objects.using("stock").create(key="bench", value=1).pk
        stock = Item.objects.using("stock")
        resilient = Item.objects.using("resilient")
        blocks, ops = (8, 250) if c.quick() else (40, 500)
        samples = c.alternate(
            {"stock": lambda: stock.get(pk=pk), "resilient": lambda: resilient.get(pk=pk)},
            blocks=blocks, ops=ops, warmup=200,
        )
        r = c.ratio(samples["resilient"], samples["stock"])
        driver = type(connections["resilient"].connection).__module__.split(".")[0]
        Item.objects.using("stock").filter(key="bench").delete()
        return {
            "cell": cell, "driver": driver, "reads_per_case": blocks * ops,
            "stock_us": c.stats(samples["stock"]).median * 1e6,
            "resilient_us": c.stats(samples["resilient"]).median * 1e6,
            "ratio": r.median, "ratio_low": r.low, "ratio_high": r.high,
        }
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
            str(r["cell"]), str(r["driver"]), str(r["reads_per_case"]),
            f"{r['stock_us']:.1f}", f"{r['resilient_us']:.1f}",
            f"{r['ratio']:.3f} ({r['ratio_low']:.3f}–{r['ratio_high']:.3f})",
            "yes" if float(r["ratio"]) <= GOAL else "NO",  # type: ignore[arg-type]
        ]
        for r in results
    ]
    markdown = c.table(
        ["cell", "driver", "reads/case", "stock µs", "resilient µs", "ratio (min–max)",
         f"≤ {GOAL}"],
        rows,
    )
    print(markdown)
    c.write_result("bench_backends", "Backends: per-query overhead", markdown,
                   {"results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
