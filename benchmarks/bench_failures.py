"""Failure timings on the real test bed, next to stock Django where it applies.

* killed peer (SIGKILL PgBouncer A) -> first successful query;
* frozen peer (SIGSTOP PgBouncer A) -> marked down, and -> no query waits any more;
* primary restart -> first successful query after the server accepts again;
* replica lag over MAX_REPLICA_LAG -> read requests moving to the primary, and back
  to the replica after catch-up (each simulated request its own unit of work);
* ``dbhealth`` over ten targets, one of them frozen.

Stock Django runs with CONN_HEALTH_CHECKS on and every query in its own "request"
(``close_old_connections()`` first, as the request_started signal does).

Run: ``python benchmarks/bench_failures.py`` (the test bed must be up; it restarts the
bed's PostgreSQL primary, so never point it at a bed that tests are using).
"""

from __future__ import annotations

import io
import statistics
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, redirect_stderr, redirect_stdout
from typing import Any

import _common as c

CAP = 30.0  # no measurement waits longer than this
FROZEN_CAP = 15.0  # how long a query may hang on a frozen peer before we thaw it


def _loop_until_ok(query: Callable[[], object], cap: float, before: Callable[[], None] | None = None
                   ) -> tuple[float | None, int]:
    """Run ``query`` until it succeeds; return (seconds, failures) or (None, failures)."""
    start = time.monotonic()
    failures = 0
    while time.monotonic() - start < cap:
        try:
            if before is not None:
                before()
            query()
            return time.monotonic() - start, failures
        except Exception:  # counting failures is the point
            failures += 1
            time.sleep(0.01)
    return None, failures


def _fmt(values: list[float | None], cap: float) -> str:
    done = [v for v in values if v is not None]
    if not done:
        return f"none within {cap:.0f} s"
    text = f"{statistics.median(done) * 1000:.0f} ms ({min(done) * 1000:.0f}–{max(done) * 1000:.0f})"
    if len(done) < len(values):
        text += f", {len(values) - len(done)} of {len(values)} never"
    return text


def main() -> int:
    """Run the benchmark, then drop what it created."""
    try:
        return run()
    finally:
        c.cleanup()


def run() -> int:
    """Measure every failure timing and write results/bench_failures.md."""
    from resilient_db_testbed.bed import config
    from resilient_db_testbed.proxy import ChaosProxy

    cfg = config()
    stack = ExitStack()
    proxies = [stack.enter_context(ChaosProxy(cfg.host, cfg.pg_primary_port))
               for _ in range(7)]
    peers = [{"HOST": cfg.host, "PORT": str(p.port)} for p in proxies]
    peers += [{"HOST": cfg.host, "PORT": str(cfg.pgbouncer_a_port)},
              {"HOST": cfg.host, "PORT": str(cfg.pgbouncer_b_port)}]
    c.configure(
        {
            "default": c.bed_alias(c.PG, "pg_primary", stock=False),
            "stock": c.bed_alias(c.PG, "pg_primary", stock=True),
            "replica": c.bed_alias(c.PG, "pg_replica", stock=False),
            "bouncers": c.bed_alias(c.PG, "pgbouncer_a", stock=False),
            "stock_bouncer": c.bed_alias(c.PG, "pgbouncer_a", stock=True),
            "ten": c.bed_alias(c.PG, "pg_primary", stock=False),
        },
        {
            "DATABASES": {
                "default": {"REPLICAS": ["replica"], "MAX_REPLICA_LAG": 1.0},
                "bouncers": {"PEERS": [{"HOST": cfg.host, "PORT": str(cfg.pgbouncer_b_port)}]},
                "ten": {"PEERS": peers},  # own server + 7 proxies + 2 PgBouncers = 10 targets
            },
            "CHECK_INTERVAL": 1.0,
            "MAX_CHECK_INTERVAL": 8.0,
            "CONNECT_TIMEOUT": 1.0,
            "RETRY": {"READS": 2, "DEADLINE": 5.0, "BACKOFF": 0.05},
            "HEALTH": {"PROBE_TIMEOUT": 2.0, "LAG_CHECK_INTERVAL": 0.2},
        },
    )
    try:
        rows, data = measure(cfg)
    finally:
        stack.close()
    md = (
        "Wall-clock times on the bed, median (min–max) over the repetitions. Settings: "
        "CONNECT_TIMEOUT 1 s, CHECK_INTERVAL 1 s, RETRY.READS 2, MAX_REPLICA_LAG 1 s, "
        "LAG_CHECK_INTERVAL 0.2 s, PROBE_TIMEOUT 2 s. Stock Django: CONN_HEALTH_CHECKS on, "
        "each query in its own request.\n\n"
        + c.table(["event", "django-resilient-db", "stock Django"], rows)
        + _frozen_note(data)
    )
    c.write_result("bench_failures", "Failure timings", md, data)
    return 0


def _frozen_note(data: dict[str, Any]) -> str:
    """Explain frozen-peer rows that never completed, rather than leave a bare "none"."""
    frozen = data.get("frozen_peer", {})
    if any(v is not None for v in frozen.get("detected", []) + frozen.get("unblocked", [])):
        return ""
    return (
        "\n\nFrozen peer: PgBouncer A is stopped with SIGSTOP while a connection through it "
        "sits idle, so the TCP session stays open and nothing answers. This benchmark sets "
        "no STALL_TIMEOUT (off by default) and no statement timeout, and the kernel's TCP "
        "retransmission limit is minutes away, so the query waits until the peer thaws and "
        "the peer is never marked down; the rows show the caps (15 s and 30 s) at which the "
        "benchmark gave up and thawed the peer."
    )


def measure(cfg: Any) -> tuple[list[list[str]], dict[str, Any]]:
    """Run every scenario; return table rows and raw data."""
    from django.db import close_old_connections, connections

    from resilient_db.health.registry import get_registry
    from resilient_db_testbed.faults import Freezer, PeerKiller, ServerControl

    reps = 1 if c.quick() else 3
    data: dict[str, Any] = {}
    rows: list[list[str]] = []

    def q(alias: str) -> Callable[[], object]:
        def run() -> object:
            with connections[alias].cursor() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone()

        return run

    def settle() -> None:
        for conn in connections.all():
            conn.close()
        get_registry().reset()
        time.sleep(0.5)

    # -- killed peer ---------------------------------------------------------------------
    res: list[float | None] = []
    stock: list[float | None] = []
    for _ in range(reps):
        settle()
        q("bouncers")()
        q("stock_bouncer")()
        killer = PeerKiller()
        try:
            killer("pgbouncer_a")
            res.append(_loop_until_ok(q("bouncers"), CAP)[0])
            stock.append(_loop_until_ok(q("stock_bouncer"), 5.0, close_old_connections)[0])
        finally:
            killer.restore()
    data["killed_peer"] = {"resilient": res, "stock": stock}
    rows.append(["killed peer → first successful query", _fmt(res, CAP),
                 _fmt(stock, 5.0) + " (no peers: waits for a restart)"])

    # -- frozen peer ---------------------------------------------------------------------
    detect: list[float | None] = []
    unblock: list[float | None] = []
    stock_frozen: list[float | None] = []
    target = _target("bouncers", 0)
    for _ in range(reps):
        settle()
        freezer = Freezer()
        seen: dict[str, float] = {}
        stop = threading.Event()
        frozen_at = threading.Event()
        ready = threading.Event()
        result: dict[str, float | None] = {}

        def client(marks: dict[str, float | None] = result, go: threading.Event = frozen_at,
                   up: threading.Event = ready) -> None:
            # An open connection through peer A, idle, when A freezes: the hard case.
            q("bouncers")()
            up.set()
            go.wait(CAP)
            marks["v"] = _loop_until_ok(q("bouncers"), CAP)[0]

        def watch(t0: float, marks: dict[str, float] = seen, done: threading.Event = stop) -> None:
            while not done.is_set() and time.monotonic() - t0 < CAP:
                if get_registry().health(target).state.value == "down":
                    marks["down"] = time.monotonic() - t0
                    return
                time.sleep(0.005)

        th = threading.Thread(target=client, daemon=True)
        th.start()
        ready.wait(10)
        try:
            freezer("pgbouncer_a")
            t0 = time.monotonic()
            watcher = threading.Thread(target=watch, args=(t0,), daemon=True)
            watcher.start()
            frozen_at.set()
            # The query may wait until the peer thaws: give up (and thaw) at FROZEN_CAP.
            th.join(FROZEN_CAP)
            unblock.append(result.get("v"))
            watcher.join(max(0.0, CAP - (time.monotonic() - t0)) if "down" not in seen else 0.1)
            detect.append(seen.get("down"))
            stock_frozen.append(_stock_on_frozen(q("stock_bouncer"), 5.0))
        finally:
            stop.set()
            freezer.thaw()
            th.join(CAP)
    data["frozen_peer"] = {"detected": detect, "unblocked": unblock, "stock": stock_frozen}
    rows.append(["frozen peer → marked down", _fmt(detect, CAP), "never (no health state)"])
    rows.append(["frozen peer → a query succeeds again", _fmt(unblock, FROZEN_CAP),
                 _fmt(stock_frozen, 5.0) + " (hangs until the peer thaws)"])

    # -- primary restart -----------------------------------------------------------------
    res, stock = [], []
    for _ in range(reps):
        settle()
        q("default")()
        q("stock")()
        control = ServerControl()
        try:
            control.stop("pg_primary")
            control.start("pg_primary")
            # Both loops start the moment the server accepts again, side by side.
            out: dict[str, float | None] = {}
            def stock_loop(into: dict[str, float | None] = out) -> None:
                into["stock"] = _loop_until_ok(q("stock"), CAP, close_old_connections)[0]

            th = threading.Thread(target=stock_loop)
            th.start()
            res.append(_loop_until_ok(q("default"), CAP)[0])
            th.join(CAP + 5)
            stock.append(out.get("stock"))
        finally:
            control.restore()
    data["primary_restart"] = {"resilient": res, "stock": stock}
    rows.append(["primary restart → first successful query (from accepting again)",
                 _fmt(res, CAP), _fmt(stock, CAP)])

    # -- replica lag ---------------------------------------------------------------------
    rows += _lag(reps, data, settle)

    # -- dbhealth --------------------------------------------------------------------------
    rows += _dbhealth(reps, data, settle)
    return rows, data


def _bounded(fn: Callable[[], float | None], cap: float) -> float | None:
    """Run ``fn`` in a daemon thread; return its result, or None if it is still running at ``cap``."""
    out: dict[str, float | None] = {}
    th = threading.Thread(target=lambda: out.__setitem__("v", fn()), daemon=True)
    th.start()
    th.join(cap)
    return out.get("v")


def _target(alias: str, index: int) -> Any:
    from resilient_db.health.targets import targets_for

    return targets_for(alias)[index]


def _stock_on_frozen(query: Callable[[], object], cap: float) -> float | None:
    """Run a stock query against the frozen peer in a thread; None if it still waits at ``cap``."""
    from django.db import close_old_connections

    done: dict[str, float] = {}

    def run() -> None:
        t0 = time.monotonic()
        try:
            close_old_connections()
            query()
            done["t"] = time.monotonic() - t0
        except Exception:  # a failure is not a success either
            pass

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(cap)
    return done.get("t")


def _lag(reps: int, data: dict[str, Any], settle: Callable[[], None]) -> list[list[str]]:
    """Time how fast routed reads leave a lagging replica, and how fast they return.

    Traffic is a stream of simulated requests, each its own unit of work (as the
    request_started signal or ``unit_of_work()`` bounds one): a write request every
    tick keeps the primary busy, and a read request asks the router where a read goes.
    Outside a unit every read after the first write would stay on the primary (read
    your writes), and the replica would never be chosen at all.

    The lag crosses MAX_REPLICA_LAG at the last replayed commit's timestamp plus
    MAX_REPLICA_LAG (replay is paused, commits go on): that instant is read from the
    replica, so "moved" is measured from the real crossing, not from the pause.
    "back" is measured from the moment the replica has replayed everything the
    primary wrote (catch-up) to the first read request routed to it again.
    """
    from django.db import connections

    from resilient_db.health.monitor import ensure_monitor
    from resilient_db.routers import get_replica, unit_of_work
    from resilient_db_testbed.faults_lag import ReplicaLag
    from resilient_db_testbed.faults_pg import pg_admin_connect

    max_lag = 1.0

    def write_request() -> None:
        with unit_of_work():
            _write(connections)

    def read_request() -> str:
        with unit_of_work():
            return get_replica("default")

    moved: list[float | None] = []
    back: list[float | None] = []
    early: list[float] = []
    from_resume: list[float | None] = []
    for _ in range(reps):
        settle()
        ensure_monitor()
        # Wait (bounded) until read requests go to the replica at all.
        start = time.monotonic()
        while read_request() != "replica" and time.monotonic() - start < 15:
            write_request()
            time.sleep(0.02)
        if read_request() != "replica":
            moved.append(None)
            back.append(None)
            from_resume.append(None)
            continue
        for _ in range(25):  # half a second of steady traffic before the fault
            write_request()
            time.sleep(0.02)
        lag = ReplicaLag()
        moved_at = None
        try:
            lag.pg_pause()
            with pg_admin_connect("pg_replica") as conn:
                row = conn.execute(
                    "SELECT EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())"
                ).fetchone()
                age = float(row[0]) if row and row[0] is not None else 0.0
            crossing = time.monotonic() - age + max_lag
            start = time.monotonic()
            while time.monotonic() - start < CAP:
                write_request()
                if read_request() == "default":
                    moved_at = time.monotonic()
                    break
                time.sleep(0.01)
            lag.pg_resume(catch_up=False)
            resumed = time.monotonic()
            lag.pg_catch_up()
        finally:
            lag.restore()
        caught_up = time.monotonic()
        if moved_at is not None and moved_at < crossing:
            early.append(crossing - moved_at)  # moved before the threshold: report it
        moved.append(None if moved_at is None else moved_at - crossing)
        back.append(None)
        from_resume.append(None)
        while time.monotonic() - caught_up < CAP:
            write_request()
            if read_request() == "replica":
                back[-1] = time.monotonic() - caught_up
                from_resume[-1] = time.monotonic() - resumed
                break
            time.sleep(0.01)
    data["replica_lag"] = {"moved": moved, "back": back, "back_from_resume": from_resume,
                           "moved_before_threshold": early}
    rows = [
        ["replica lag crosses MAX_REPLICA_LAG (1 s) → read requests go to the primary",
         _fmt(moved, CAP), "n/a (no lag awareness: reads stay on the lagging replica)"],
        ["replica caught up → read requests go to the replica again",
         _fmt(back, CAP) + f" (from replay resumed: {_fmt(from_resume, CAP)})", "n/a"],
    ]
    if early:
        rows[0][1] += f"; {len(early)} moved before the threshold"
    return rows


def _write(connections: Any) -> None:
    # txid_current() takes a transaction id, so each call commits a WAL record with a
    # timestamp: the replica's replay timestamp (and so its lag) follows real traffic.
    with connections["default"].cursor() as cur:
        cur.execute("SELECT txid_current()")


def _dbhealth(reps: int, data: dict[str, Any], settle: Callable[[], None]) -> list[list[str]]:
    from django.core.management import CommandError, call_command

    from resilient_db_testbed.faults import Freezer

    def timed() -> float:
        t0 = time.monotonic()
        sink = io.StringIO()
        try:
            with redirect_stdout(sink), redirect_stderr(sink):
                call_command("dbhealth", "--database", "ten", "--timeout", "2")
        except (SystemExit, CommandError):
            pass  # the exit status says healthy/degraded; only the time matters here
        return time.monotonic() - t0

    healthy, frozen = [], []
    for _ in range(reps):
        settle()
        healthy.append(timed())
        freezer = Freezer()
        try:
            freezer("pgbouncer_b")
            frozen.append(timed())
        finally:
            freezer.thaw()
    data["dbhealth"] = {"healthy": healthy, "one_frozen": frozen}
    return [
        ["`dbhealth`, ten targets, all healthy", _fmt(list(healthy), CAP), "n/a"],
        ["`dbhealth`, ten targets, one frozen (probe timeout 2 s)", _fmt(list(frozen), CAP), "n/a"],
    ]


if __name__ == "__main__":
    sys.exit(main())
