"""The health monitor against real faults: frozen peers, a restart, a hammered endpoint.

Each row is one acceptance scenario of the monitor, run on the test bed with
real SIGSTOP / SIGCONT of PgBouncer, a real ``pg_ctl stop -m fast`` / start, a
real standby refusing a write, and Redis pub/sub. It also measures the
per-query cost of the heartbeat (on against off, alternating blocks).

Run: ``python benchmarks/bench_monitor.py`` (the test bed must be up; about
two minutes). ``RESILIENT_DB_BENCH_QUICK=1`` shortens the fault windows.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import _common as c


def scaled(seconds: float) -> float:
    """Return ``seconds``, or a third of it for a quick run."""
    return seconds / 3 if c.quick() else seconds


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def paced(rate: float, duration: float, call: Callable[[], None]) -> list[tuple[float, bool]]:
    """Call ``call`` ``rate`` times a second for ``duration`` s; return (seconds, ok) per call."""
    out: list[tuple[float, bool]] = []
    end = time.monotonic() + duration
    while time.monotonic() < end:
        began = time.monotonic()
        try:
            call()
            ok = True
        except Exception:  # noqa: BLE001 - a failed request is a measured outcome
            ok = False
        took = time.monotonic() - began
        out.append((took, ok))
        time.sleep(max(0.0, 1 / rate - took))
    return out


def request(alias: str) -> Callable[[], None]:
    """Return a 'request': a fresh connection (CONN_MAX_AGE 0) and one ORM read."""
    from django.db import connections
    from tests.testapp.models import Item

    def call() -> None:
        try:
            Item.objects.using(alias).count()
        finally:
            connections[alias].close()

    return call


# The peers each scenario freezes, by vendor: (alias, persistent alias, peers, their kind).
PEERS = {
    "PostgreSQL": ("pool", "pool_persistent", ("pgbouncer_a", "pgbouncer_b"), "PgBouncer"),
    "MariaDB": ("mpool", "mpool_persistent", ("maria_peer_a", "maria_peer_b"), "MariaDB"),
}


def one_peer_frozen(freezer: Any, vendor: str = "PostgreSQL") -> list[str]:
    alias, _, peers, kind = PEERS[vendor]
    window = scaled(20.0)
    threading.Timer(0.5, freezer, args=(peers[0],)).start()
    try:
        calls = paced(20, window, request(alias))
    finally:
        time.sleep(0.1)
        freezer.thaw()
    slow = sum(t > 1.0 for t, _ in calls)
    failed = sum(not ok for _, ok in calls)
    return [f"one of two {kind} peers SIGSTOPped {window:.0f} s, new connection per request, "
            "20 requests/s", f"{len(calls)} requests, {failed} failed, {slow} over 1 s, "
            f"max {ms(max(t for t, _ in calls))}", "0 failed, at most 1 over 1 s"]


def both_peers_frozen(freezer: Any, vendor: str = "PostgreSQL") -> list[str]:
    alias, _, peers, kind = PEERS[vendor]
    window = scaled(15.0)
    for peer in peers:
        freezer(peer)
    try:
        calls = paced(10, window, request(alias))
    finally:
        freezer.thaw()
    after = paced(10, 3.0, request(alias))
    first_ok = None
    elapsed = 0.0
    for took, ok in after:
        elapsed += max(took, 0.1)
        if ok:
            first_ok = elapsed
            break
    errors = sum(not ok for _, ok in calls)
    slow = sum(t > 1.0 for t, _ in calls[2:])
    tail = [ok for _, ok in after]
    tail = tail[tail.index(True):] if True in tail else []
    median = statistics.median(t for t, _ in calls[2:]) if len(calls) > 2 else 0.0
    return [f"both {kind} peers SIGSTOPped {window:.0f} s, 10 requests/s",
            f"{len(calls)} answered ({errors} with AllTargetsDown), after the first two "
            f"{slow} over 1 s, median {median * 1000:.1f} ms; first success "
            f"{ms(first_ok) if first_ok is not None else 'none'} after SIGCONT, then "
            f"{sum(not ok for ok in tail)} failures",
            "answered at the pace they arrive; after the first two at most 1 over 1 s; "
            "success within 1 s of SIGCONT, then 0 failures"]


def two_threads_persistent(freezer: Any, vendor: str = "PostgreSQL") -> list[str]:
    from django.db import connections
    from tests.testapp.models import Item

    _, alias, peers, kind = PEERS[vendor]
    window = scaled(20.0)
    stop = threading.Event()
    results: dict[int, list[tuple[float, bool]]] = {0: [], 1: []}

    def worker(n: int) -> None:
        try:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    Item.objects.using(alias).count()
                    ok = True
                except Exception:  # noqa: BLE001 - counted
                    ok = False
                results[n].append((time.monotonic() - began, ok))
                time.sleep(0.02)
        finally:
            connections[alias].close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    freezer(peers[0])
    time.sleep(window)
    freezer.thaw()
    stop.set()
    for t in threads:
        t.join()
    failed = sum(not ok for r in results.values() for _, ok in r)
    worst = max(t for r in results.values() for t, _ in r)
    slow = [sum(t > 1.0 for t, _ in r) for r in results.values()]
    return [f"persistent connections, 2 threads, serving {kind} peer SIGSTOPped {window:.0f} s, "
            "default settings (no STALL_TIMEOUT)",
            f"{sum(len(r) for r in results.values())} reads, {failed} failed, slowest "
            f"{ms(worst)}, slow (> 1 s) per thread {slow}",
            "0 failed, none over 3 s, at most 1 slow per thread"]


def worker_loop_restart(server: Any) -> list[str]:
    import psycopg
    from tests.testapp.models import Item

    from resilient_db_testbed.bed import config

    cfg = config()
    successes: list[float] = []
    failures = 0
    accepting: list[float] = []
    stopped = threading.Event()

    def bounce() -> None:
        server.stop("pg_primary")
        stopped.set()
        time.sleep(1.0)
        server.start("pg_primary")

    def watch() -> None:
        stopped.wait(60)
        while not accepting:
            try:
                psycopg.connect(host=cfg.host, port=cfg.port("pg_primary"), dbname=cfg.pg_db,
                                user=cfg.pg_user, password=cfg.pg_password,
                                connect_timeout=1).close()
            except psycopg.Error:
                time.sleep(0.005)
                continue
            accepting.append(time.monotonic())

    threads = [threading.Thread(target=bounce), threading.Thread(target=watch)]
    for t in threads:
        t.start()
    end = time.monotonic() + 6.0
    while time.monotonic() < end:
        try:
            Item.objects.using("primary").count()
            successes.append(time.monotonic())
        except Exception:  # noqa: BLE001 - counted
            failures += 1
        time.sleep(0.01)
    for t in threads:
        t.join()
    resumed = min((s for s in successes if accepting and s >= accepting[0]), default=None)
    gap = "never" if resumed is None else ms(resumed - accepting[0])
    return ["worker loop (persistent connection) across `pg_ctl stop -m fast` / start",
            f"{failures} failed reads; work resumed {gap} after the server accepted connections",
            "0 failed, resumed within 500 ms"]


def hammered_endpoint(freezer: Any, vendor: str = "PostgreSQL") -> list[str]:
    from django.test import RequestFactory

    from resilient_db.health import snapshot
    from resilient_db.health.views import health

    _, _, peers, kind = PEERS[vendor]
    factory = RequestFactory()
    freezer(peers[0])
    try:
        health(factory.get("/"))  # the first call of a process waits for its first probes
        before = snapshot.started
        window = scaled(10.0)
        durations: list[float] = []
        ordinary: list[float] = []
        end = time.monotonic() + window

        def hammer() -> None:
            while time.monotonic() < end:
                began = time.monotonic()
                health(factory.get("/"))
                durations.append(time.monotonic() - began)

        def ordinary_requests() -> None:
            call = request("primary")
            while time.monotonic() < end:
                began = time.monotonic()
                call()
                ordinary.append(time.monotonic() - began)
                time.sleep(0.05)

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        threads.append(threading.Thread(target=ordinary_requests))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        probes = snapshot.started - before
        targets = len(snapshot._entries)
    finally:
        freezer.thaw()
    durations.sort()
    p99 = durations[int(len(durations) * 0.99)]
    return [f"readiness endpoint, 8 threads for {window:.0f} s, one {kind} target SIGSTOPped",
            f"{len(durations)} calls, p99 {p99 * 1000:.1f} ms; ordinary request alongside max "
            f"{ms(max(ordinary))}; {probes} probes for {targets} targets "
            f"({probes / max(targets, 1):.1f} per target)",
            "p99 ≤ 100 ms, ordinary ≤ 500 ms, ≤ 2 connections per target"]


def long_query_and_freeze(freezer: Any) -> list[str]:
    from django.db import connections

    from resilient_db.backends.scopes import idempotent
    from resilient_db.health.monitor import running_monitor

    conn = connections["pool_persistent"]
    length = 3.0 if c.quick() else 10.0
    began = time.monotonic()
    with conn.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM pg_sleep({length})")
        cursor.fetchone()
    long_took = time.monotonic() - began
    monitor = running_monitor()
    cuts = monitor.cuts if monitor is not None else 0
    conn.close()
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1")
    timer = threading.Timer(0.3, freezer, args=("pgbouncer_a",))
    timer.start()
    began = time.monotonic()
    try:
        with idempotent(), conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_sleep(1)")
            cursor.fetchone()
        took = time.monotonic() - began
        where = conn.resilience.target.label if conn.resilience.target else "?"
    finally:
        timer.join()
        freezer.thaw()
        conn.close()
    return [f"`pg_sleep({length:g})` on a healthy server while the heartbeat runs; then a 1 s "
            "read whose PgBouncer freezes 0.3 s in",
            f"long query completed in {long_took:.2f} s, {cuts} statements cut; the frozen read "
            f"returned after {took:.2f} s from {where.split('/')[0].rsplit(':', 1)[-1]} "
            "(the other peer)",
            "long query never cut; read fails over within the detection bound (~1.5 s) "
            "plus its own 1 s"]


def redis_push() -> list[str]:
    from resilient_db.health.errors import Category
    from resilient_db.health.registry import Registry
    from resilient_db.health.stores import CacheStore
    from resilient_db.health.targets import Target

    target = Target("bench", "db-x", "5432", "app")
    samples: list[float] = []
    prefix = f"rdb-bench:{time.time_ns()}:"
    one, two = (CacheStore("redis", local_ttl=30.0, prefix=prefix) for _ in range(2))
    try:
        writer = Registry(one, check_interval=30.0, max_check_interval=60.0, send_signals=False)
        reader = Registry(two, check_interval=30.0, max_check_interval=60.0, send_signals=False)
        time.sleep(0.3)
        for _ in range(20):
            assert reader.is_available(target)
            began = time.monotonic()
            writer.record_failure(target, OSError("bench"), Category.CANNOT_CONNECT)
            while reader.is_available(target) and time.monotonic() - began < 2.0:
                time.sleep(0.0005)
            samples.append(time.monotonic() - began)
            writer.record_success(target, 0.001)
            while not reader.is_available(target) and time.monotonic() - began < 4.0:
                time.sleep(0.0005)
    finally:
        one.clear()
        one.close()
        two.close()
    return ["Redis store: one registry marks a target down, another store (LOCAL_TTL 30 s) "
            "stops using it (20 times)",
            f"median {statistics.median(samples) * 1000:.1f} ms, max {max(samples) * 1000:.1f} ms",
            "≤ 100 ms"]


def read_only_write() -> list[str]:
    from django.db import connections
    from tests.testapp.models import Item

    Item.objects.using("primary").filter(key="bench-ro").delete()
    began = time.monotonic()
    Item.objects.using("rw").create(key="bench-ro", value=1)
    took = time.monotonic() - began
    landed = connections["rw"].resilience.target
    count = Item.objects.using("primary").filter(key="bench-ro").count()
    Item.objects.using("primary").filter(key="bench-ro").delete()
    return ["a write refused as read-only (a standby, 25006) with a writable peer",
            f"succeeded in {ms(took)} on the writable peer "
            f"({'yes' if landed is not None and landed.index == 1 else 'no'}); rows written: "
            f"{count}", "succeeds on the peer, once"]


def heartbeat_overhead() -> list[str]:
    from tests.testapp.models import Item

    pk = Item.objects.using("primary").create(key="bench-hb", value=1).pk
    querysets = {name: Item.objects.using(name)
                 for name in ("pool_persistent", "plain_pool", "stock_pool")}
    cases = {name: (lambda qs=qs: qs.get(pk=pk)) for name, qs in querysets.items()}
    blocks, ops = (8, 250) if c.quick() else (40, 500)
    samples = c.alternate(cases, blocks=blocks, ops=ops, warmup=200)
    stock = c.ratio(samples["pool_persistent"], samples["stock_pool"])
    plain = c.ratio(samples["pool_persistent"], samples["plain_pool"])
    Item.objects.using("primary").filter(pk=pk).delete()
    us = {k: c.stats(v).median * 1e6 for k, v in samples.items()}
    return ["per-query cost: monitored alias (PEERS, heartbeat on) / resilient alias without "
            "a monitor / stock Django, same PgBouncer, ORM read by pk, persistent connections",
            f"{us['pool_persistent']:.1f} / {us['plain_pool']:.1f} / {us['stock_pool']:.1f} µs; "
            f"monitored ÷ stock {stock.median:.3f} ({stock.low:.3f}–{stock.high:.3f}), "
            f"monitored ÷ unmonitored {plain.median:.3f} ({plain.low:.3f}–{plain.high:.3f})",
            "≤ 1.05"]


def main() -> int:
    """Run every scenario and write results/bench_monitor.md."""
    from resilient_db_testbed.bed import config

    cfg = config()
    peer_b = {"HOST": cfg.host, "PORT": str(cfg.port("pgbouncer_b"))}
    primary = {"HOST": cfg.host, "PORT": str(cfg.port("pg_primary"))}
    maria_b = {"HOST": cfg.host, "PORT": str(cfg.port("maria_peer_b"))}
    c.configure(
        {
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
            "primary": c.bed_alias(c.PG, "pg_primary", stock=False, CONN_MAX_AGE=None),
            "pool": c.bed_alias(c.PG, "pgbouncer_a", stock=False, CONN_MAX_AGE=0),
            "pool_persistent": c.bed_alias(c.PG, "pgbouncer_a", stock=False, CONN_MAX_AGE=None),
            "plain_pool": c.bed_alias(c.PG, "pgbouncer_a", stock=False),
            "stock_pool": c.bed_alias(c.PG, "pgbouncer_a", stock=True),
            "rw": c.bed_alias(c.PG, "pg_replica", stock=False, CONN_MAX_AGE=None),
            "mprimary": c.bed_alias(c.MARIA, "maria_primary", stock=False, CONN_MAX_AGE=None),
            "mpool": c.bed_alias(c.MARIA, "maria_peer_a", stock=False, CONN_MAX_AGE=0),
            "mpool_persistent": c.bed_alias(c.MARIA, "maria_peer_a", stock=False,
                                            CONN_MAX_AGE=None),
        },
        {
            "DATABASES": {
                "primary": {"ROLE": "primary"},
                "pool": {"PEERS": [peer_b]},
                "pool_persistent": {"PEERS": [peer_b]},
                "rw": {"PEERS": [primary]},
                "mprimary": {"ROLE": "primary"},
                "mpool": {"PEERS": [maria_b]},
                "mpool_persistent": {"PEERS": [maria_b]},
            },
            "CONNECT_TIMEOUT": 2.0,
        },
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "redis": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                      "LOCATION": f"redis://{cfg.host}:{cfg.port('redis')}/3"},
        },
    )
    from tests.testapp.models import Item

    from resilient_db.health import snapshot
    from resilient_db.health.monitor import stop_monitor
    from resilient_db.health.registry import get_registry
    from resilient_db_testbed.faults import Freezer, ServerControl

    c.ensure_tables("primary", Item)
    c.ensure_tables("mprimary", Item)
    freezer, server = Freezer(), ServerControl()
    rows: list[list[str]] = []
    scenarios: list[Callable[[], list[str]]] = [
        lambda: one_peer_frozen(freezer),
        lambda: both_peers_frozen(freezer),
        lambda: two_threads_persistent(freezer),
        lambda: worker_loop_restart(server),
        lambda: hammered_endpoint(freezer),
        lambda: long_query_and_freeze(freezer),
        redis_push,
        read_only_write,
        heartbeat_overhead,
        lambda: one_peer_frozen(freezer, "MariaDB"),
        lambda: both_peers_frozen(freezer, "MariaDB"),
        lambda: two_threads_persistent(freezer, "MariaDB"),
        lambda: hammered_endpoint(freezer, "MariaDB"),
    ]
    try:
        for scenario in scenarios:
            get_registry().reset()
            snapshot.reset()
            row = scenario()
            print(" | ".join(row), flush=True)
            rows.append(row)
            stop_monitor()
            time.sleep(0.5)
    finally:
        freezer.thaw()
        server.restore()
        stop_monitor()
        c.cleanup()
    markdown = (
        "Command: `python benchmarks/bench_monitor.py` (real SIGSTOP/SIGCONT of PgBouncer "
        "and of the MariaDB peers, "
        "`pg_ctl stop -m fast`/start, a standby refusing a write, Redis pub/sub; default "
        "settings unless the scenario says otherwise, `CONNECT_TIMEOUT` 2 s). The per-query "
        "ratios vary widely between blocks on a shared two-core machine (see min–max); the "
        "monitored ÷ unmonitored ratio isolates what the heartbeat adds.\n\n"
        + c.table(["scenario", "measured", "target"], rows)
    )
    print(markdown)
    c.write_result("bench_monitor", "Health monitor: acceptance scenarios", markdown,
                   {"rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
