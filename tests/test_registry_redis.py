"""The cache store on a real Redis, shared by two real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from resilient_db.health.errors import Category
from resilient_db.health.records import State
from resilient_db.health.registry import Registry
from resilient_db.health.stores import CacheStore
from resilient_db.health.targets import Target

pytestmark = pytest.mark.redis

A = Target("bouncers", "db-a", "6432", "app")
B = Target("bouncers", "db-b", "6432", "app", index=1)
LOCAL_TTL = 0.2
ROOT = Path(__file__).resolve().parent.parent

# A second process: marks A down through the shared store, then waits.
OTHER = textwrap.dedent(
    """
    import os, sys, time
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django
    django.setup()
    from resilient_db.health.errors import Category
    from resilient_db.health.registry import Registry
    from resilient_db.health.stores import CacheStore
    from resilient_db.health.targets import Target
    prefix, ttl = sys.argv[1], float(sys.argv[2])
    reg = Registry(CacheStore("redis", local_ttl=ttl, prefix=prefix), check_interval=30.0,
                   max_check_interval=60.0, send_signals=False)
    a = Target("bouncers", "db-a", "6432", "app")
    reg.is_available(a)
    print("ready", flush=True)
    sys.stdin.readline()
    reg.record_failure(a, ConnectionRefusedError(111, "refused"), Category.CANNOT_CONNECT)
    print("marked", time.time(), flush=True)
    sys.stdin.readline()
    reg.record_success(a, 0.01)
    print("up", time.time(), flush=True)
    sys.stdin.readline()
    """
)


@pytest.fixture
def prefix() -> str:
    return f"rdb-test:{uuid.uuid4().hex}:"


@pytest.fixture
def store(prefix: str):
    s = CacheStore("redis", local_ttl=LOCAL_TTL, prefix=prefix)
    yield s
    s.clear()
    s.close()


def registry(store: CacheStore) -> Registry:
    return Registry(store, check_interval=30.0, max_check_interval=60.0, send_signals=False)


def test_another_process_learns_within_local_ttl(store: CacheStore, prefix: str) -> None:
    reg = registry(store)
    assert reg.is_available(A)  # known here from now on
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (ROOT, ROOT / "src", ROOT / "testbed")))}
    proc = subprocess.Popen(
        [sys.executable, "-c", OTHER, prefix, str(LOCAL_TTL)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.stdin.write("\n")
        proc.stdin.flush()
        line = proc.stdout.readline().split()
        assert line[0] == "marked"
        marked = float(line[1])
        deadline = time.monotonic() + 5
        while reg.is_available(A) and time.monotonic() < deadline:
            time.sleep(0.005)
        learned = time.time() - marked
        assert not reg.is_available(A)
        assert learned <= LOCAL_TTL + 0.15, learned
        assert reg.health(A).last_category == "cannot_connect"
        # And back up again.
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("up")
        deadline = time.monotonic() + 5
        while not reg.is_available(A) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert reg.is_available(A)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for stream in (proc.stdout, proc.stdin):
            if stream is not None:
                stream.close()


def test_another_process_learns_a_state_change_by_push_within_100_ms(prefix: str) -> None:
    # LOCAL_TTL 30 s: only the push (Redis pub/sub) can bring the news this fast.
    store = CacheStore("redis", local_ttl=30.0, prefix=prefix)
    reg = registry(store)
    assert reg.is_available(A)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (ROOT, ROOT / "src", ROOT / "testbed")))}
    proc = subprocess.Popen(
        [sys.executable, "-c", OTHER, prefix, "30.0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)  # both listeners subscribed
        proc.stdin.write("\n")
        proc.stdin.flush()
        line = proc.stdout.readline().split()
        assert line[0] == "marked"
        marked = float(line[1])
        deadline = time.monotonic() + 2
        while reg.is_available(A) and time.monotonic() < deadline:
            time.sleep(0.002)
        learned = time.time() - marked
        assert not reg.is_available(A)
        assert learned <= 0.1, learned
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("up")
        deadline = time.monotonic() + 2
        while not reg.is_available(A) and time.monotonic() < deadline:
            time.sleep(0.002)
        assert reg.is_available(A)
        assert store.pushed >= 2
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for stream in (proc.stdout, proc.stdin):
            if stream is not None:
                stream.close()
        store.clear()
        store.close()


def test_half_open_probe_is_exclusive_across_stores(prefix: str) -> None:
    clock_now = [1000.0]

    def clock() -> float:
        return clock_now[0]

    stores = [CacheStore("redis", local_ttl=0.0, prefix=prefix) for _ in range(3)]
    regs = [
        Registry(s, check_interval=1.0, max_check_interval=8.0, clock=clock, send_signals=False)
        for s in stores
    ]
    try:
        regs[0].record_failure(A, None, Category.CANNOT_CONNECT)
        clock_now[0] += 1.0
        wins = [r.try_acquire_probe(A) for r in regs]
        assert wins.count(True) == 1
        winner = regs[wins.index(True)]
        winner.record_success(A, 0.01)
        assert all(r.health(A).state is State.UP for r in regs)
    finally:
        stores[0].clear()


def test_a_new_process_does_not_use_a_target_known_down(store: CacheStore, prefix: str) -> None:
    registry(store).record_failure(A, None, Category.CANNOT_CONNECT)
    fresh = registry(CacheStore("redis", local_ttl=LOCAL_TTL, prefix=prefix))
    # First question about A: fetched at once, not after a TTL.
    assert not fresh.is_available(A)
    assert fresh.is_available(B)
    assert {h.key for h in fresh.all()} >= {A.key}


def test_a_dead_cache_degrades_to_local_health() -> None:
    from django.test import override_settings

    caches = {"dead": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                       "LOCATION": "redis://127.0.0.1:1/0"}}
    with override_settings(CACHES=caches):
        reg = registry(CacheStore("dead", local_ttl=0.0))
        assert reg.is_available(A)
        reg.record_failure(A, None, Category.CANNOT_CONNECT)
        assert not reg.is_available(A)
        reg.record_success(A)
        assert reg.is_available(A)
