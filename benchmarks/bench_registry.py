"""Benchmark the registry's hot path: ``is_available``, ``plan`` over 3 targets, memory.

Run: ``python benchmarks/bench_registry.py`` (``--cache`` adds the Redis-backed
store with the test bed's Redis; ``RESILIENT_DB_BENCH_QUICK=1`` for a short run).
Goals: ``is_available`` median <= 2 us, ``plan`` (3 targets) <= 5 us, memory
flat over a million reads.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT / "src", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def per_call(fn: Callable[[], object], calls: int, blocks: int) -> list[float]:
    """Return the time per call (seconds) of each block of ``calls`` calls."""
    out = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        out.append((time.perf_counter() - start) / calls)
    return out


def report(name: str, samples: list[float], goal_us: float) -> str:
    med = statistics.median(samples) * 1e6
    line = (
        f"| {name} | {med:.3f} | {min(samples) * 1e6:.3f} | {max(samples) * 1e6:.3f} "
        f"| {goal_us:g} | {'yes' if med <= goal_us else 'NO'} |"
    )
    print(line)
    return line


def memory(fn: Callable[[], object], reads: int) -> tuple[int, int]:
    """Return (traced bytes after warm-up, growth over ``reads`` more calls)."""
    for _ in range(10_000):
        fn()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(reads):
        fn()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return before, after - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", action="store_true", help="also measure the Redis store")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from resilient_db.health.errors import Category
    from resilient_db.health.registry import Registry
    from resilient_db.health.stores import CacheStore, LocalStore
    from resilient_db.health.targets import Target

    quick = os.environ.get("RESILIENT_DB_BENCH_QUICK", "") not in ("", "0")
    calls, blocks = (20_000, 5) if quick else (200_000, 15)
    reads = 100_000 if quick else 1_000_000

    targets = [Target("default", f"db-{c}", "5432", "app", index=i) for i, c in enumerate("abc")]
    stores: list[tuple[str, object]] = [("local", LocalStore())]
    if args.cache:
        stores.append(("cache (Redis, LOCAL_TTL 0.5 s)", CacheStore("redis", local_ttl=0.5,
                                                                    prefix="rdb-bench:")))
    print(f"Python {platform.python_version()} on {platform.machine()}, "
          f"{platform.processor() or platform.platform()}, {os.cpu_count()} CPUs")
    print("| case | median us | min us | max us | goal us | met |")
    print("|---|---|---|---|---|---|")
    for name, store in stores:
        reg = Registry(store, check_interval=5.0, max_check_interval=60.0,  # type: ignore[arg-type]
                       send_signals=False)
        for t in targets:
            reg.record_success(t, 0.001)
        t0 = targets[0]
        report(f"is_available, {name}, up", per_call(functools.partial(reg.is_available, t0), calls, blocks), 2)
        report(f"plan(3), {name}, all up", per_call(functools.partial(reg.plan, targets), calls, blocks), 5)
        reg.record_failure(targets[1], None, Category.CANNOT_CONNECT)
        report(f"plan(3), {name}, one down", per_call(functools.partial(reg.plan, targets), calls, blocks), 5)
        base, growth = memory(functools.partial(reg.is_available, t0), reads)
        print(f"memory over {reads:,} is_available reads ({name}): "
              f"{growth:+,} bytes (traced before: {base:,})")
        base, growth = memory(functools.partial(reg.plan, targets), reads // 10)
        print(f"memory over {reads // 10:,} plan calls ({name}): {growth:+,} bytes")
        reg.reset()
    return 0


if __name__ == "__main__":
    sys.exit(main())
