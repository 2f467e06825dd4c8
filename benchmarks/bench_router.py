"""Cost of one routing decision: ``PinningReplicaRouter.db_for_read`` with 3 replicas.

No query is run: a routing decision reads only the health registry (in-process
store) and the unit-of-work context. The three replicas are up with fresh lag
(recorded in the registry as the monitor would), ``MAX_REPLICA_LAG`` is set, so
every call checks health and lag of all three. Cases alternate in blocks:

* replica read: round-robin over 3 usable replicas (the full path);
* least lag: the same, policy ``least_lag``;
* after a write: the unit of work wrote, so the read goes to the primary;
* stock: Django's ``ConnectionRouter.db_for_read`` with no router (the floor).

Run: ``python benchmarks/bench_router.py`` (no server needed; the aliases are
never connected). ``RESILIENT_DB_BENCH_QUICK=1`` for a short run.
"""

from __future__ import annotations

import sys

import _common as c

REPLICAS = ["r1", "r2", "r3"]
TARGET_US = 5.0


def main() -> int:
    """Run the benchmark and write results/bench_router.md."""
    sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
    c.configure(
        {"default": dict(sqlite), **{r: dict(sqlite) for r in REPLICAS}},
        {
            "DATABASES": {"default": {"REPLICAS": REPLICAS, "MAX_REPLICA_LAG": 5.0}},
            # Never stale during the run, and no monitor thread: the numbers are
            # the decision alone.
            "HEALTH": {"LAG_CHECK_INTERVAL": 3600.0},
        },
    )
    from django.db import router as django_router
    from django.test import override_settings
    from tests.testapp.models import Item

    from resilient_db.health.registry import get_registry
    from resilient_db.health.targets import targets_for
    from resilient_db.routers import PinningReplicaRouter
    from resilient_db.routers import context as ctx

    registry = get_registry()
    for alias in REPLICAS:
        for target in targets_for(alias):
            registry.record_success(target)
            registry.record_lag(target, 0.2)

    router = PinningReplicaRouter()
    assert router.db_for_read(Item) in REPLICAS

    def replica_read() -> object:
        return router.db_for_read(Item)

    def stock() -> object:
        return django_router.db_for_read(Item)

    wrote_unit = ctx.Unit(wrote={"default"})

    def after_write() -> object:
        token = ctx._unit.set(wrote_unit)
        try:
            return router.db_for_read(Item)
        finally:
            ctx._unit.reset(token)

    blocks, ops = (10, 2000) if c.quick() else (40, 20000)
    results = c.alternate(
        {"replica read (round robin)": replica_read, "after a write": after_write, "stock Django, no router": stock},
        blocks=blocks,
        ops=ops,
        warmup=1000,
    )
    with override_settings(RESILIENT_DB={
        "DATABASES": {"default": {"REPLICAS": REPLICAS, "MAX_REPLICA_LAG": 5.0}},
        "HEALTH": {"LAG_CHECK_INTERVAL": 3600.0},
        "REPLICA_POLICY": "least_lag",
    }):
        registry = get_registry()
        for alias in REPLICAS:
            for target in targets_for(alias):
                registry.record_success(target)
                registry.record_lag(target, 0.2)
        assert router.db_for_read(Item) in REPLICAS
        results |= c.alternate({"replica read (least lag)": replica_read}, blocks=blocks, ops=ops, warmup=1000)

    rows = []
    data: dict[str, object] = {"machine": c.machine(), "blocks": blocks, "ops_per_block": ops}
    for name, samples in results.items():
        s = c.stats(samples)
        rows.append([name, s.us()])
        data[name] = {"median_us": s.median * 1e6, "min_us": s.low * 1e6, "max_us": s.high * 1e6}
    full = c.stats(results["replica read (round robin)"]).median * 1e6
    verdict = "meets" if full <= TARGET_US else "MISSES"
    markdown = "\n\n".join(
        [
            c.table(["case (3 replicas, MAX_REPLICA_LAG set)", "per call: median (min–max over blocks)"], rows),
            f"The full replica path {verdict} the {TARGET_US:g} µs target ({full:.2f} µs).",
            "Machine: " + "; ".join(f"{k}: {v}" for k, v in c.machine().items()),
            "Rerun: `.venv/bin/python benchmarks/bench_router.py`",
        ]
    )
    c.write_result("bench_router", "Routing decision (db_for_read, 3 replicas)", markdown, data)
    return 0 if full <= TARGET_US else 1


if __name__ == "__main__":
    sys.exit(main())
