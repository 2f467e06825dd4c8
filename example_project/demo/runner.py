"""The live failure demo: the shop under a real server, steady traffic, faults one by one."""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo import bedctl
from demo.dashboard import Dashboard, Progress
from demo.load import WRITE, Load
from demo.observer import HealthWatcher
from demo.phases import FaultState, bring_back, schedule
from demo.report import (
    COMPARISON_HEADERS,
    SUMMARY_HEADERS,
    PhaseStats,
    WriteTally,
    check_writes,
    comparison_rows,
    phase_stats,
    summary_rows,
    table,
)
from demo.server import AppServer, default_kind
from demo.web import RunState, WebFeed
from resilient_db_testbed.ledger import totals
from resilient_db_testbed.load import sleep_until, windows

# Small enough that pausing replay crosses it within a phase.
DEMO_MAX_REPLICA_LAG = "2"
TITLES = {"stock": "stock Django backend", "resilient": "django-resilient-db"}


@dataclass
class RunResult:
    """The outcome of one run of the schedule."""

    mode: str
    names: list[str]
    stats: list[PhaseStats]
    tallies: list[WriteTally]
    # Each phase's window, in seconds from the start of traffic: its figures
    # count the requests that finished in it.
    windows: list[tuple[float, float]]


def target_names() -> dict[tuple[str, str], str]:
    """Map (host, port) of every bed server to its name."""
    from resilient_db_testbed import bed

    cfg = bed.config()
    return {(cfg.host, str(cfg.port(name))): name for name in bedctl.servers()}


def name_of(host: str, port: str) -> str:
    """Return the bed name of ``host:port`` (or the address itself)."""
    return target_names().get((host, port), f"{host}:{port}")


def _label(served: dict[str, Any]) -> str:
    if served.get("vendor") == "sqlite":
        return "sqlite"
    return name_of(str(served.get("host", "")), str(served.get("port", "")))


def rows_in_database(run_id: str) -> dict[str, int]:
    """Return key -> number of rows for the orders this run sent, read on the primary itself."""
    import psycopg

    from resilient_db_testbed import bed

    cfg = bed.config()
    with psycopg.connect(
        host=cfg.host, port=cfg.pg_primary_port, user=cfg.pg_user, password=cfg.pg_password,
        dbname=cfg.pg_db, connect_timeout=5,
    ) as conn:
        found = conn.execute(
            "SELECT key, count(*) FROM orders_order WHERE key LIKE %s GROUP BY key",
            (f"{run_id}-%",),
        ).fetchall()
    rows = {str(key): int(n) for key, n in found}
    if bedctl.maria_available():
        rows.update(maria_rows(run_id))
    return rows


def maria_rows(run_id: str) -> dict[str, int]:
    """Return key -> number of rows of this run's orders on the MariaDB primary itself."""
    import MySQLdb

    from resilient_db_testbed import bed

    cfg = bed.config()
    conn = MySQLdb.connect(host=cfg.host, port=cfg.maria_primary_port, user=cfg.maria_user,
                           password=cfg.maria_password, database=cfg.maria_db, connect_timeout=5)
    try:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT `key`, COUNT(*) FROM orders_order WHERE `key` LIKE %s GROUP BY `key`",
            (f"{run_id}-%",),
        )
        return {str(key): int(n) for key, n in cursor.fetchall()}
    finally:
        conn.close()


def _busiest_peer(load: Load, prefix: str = "pgbouncer") -> str:
    now = load.now()
    with load.stats.lock:
        recent = [s for s in load.stats.samples[-2000:] if s.t > now - 3 and s.kind == WRITE]
    peers = Counter(s.target for s in recent if s.ok and s.target.startswith(prefix))
    return peers.most_common(1)[0][0] if peers else f"{prefix}_a"


def run_once(mode: str, duration: float, kind: str, env: dict[str, str], workdir: Path,
             *, live: bool | None, feed: WebFeed | None = None) -> RunResult:
    """Run the whole schedule once against the shop in ``mode`` ("stock" or "resilient")."""
    phases = schedule()
    names = [p.name for p in phases]
    total_weight = sum(p.weight for p in phases)
    run_id = f"demo{secrets.token_hex(4)}"
    server_env = dict(env, SHOP_STOCK="1" if mode == "stock" else "0",
                      MAX_REPLICA_LAG=DEMO_MAX_REPLICA_LAG, HEALTH_SHOW_HOSTS="1")
    watch_env = dict(env, SHOP_STOCK="0", MAX_REPLICA_LAG=DEMO_MAX_REPLICA_LAG)
    server = AppServer(kind, server_env, workdir / f"{mode}-{kind}.log")
    progress = Progress(phases=len(phases), total=duration)
    maria = bedctl.maria_available()
    load = Load(server.port, run_id, _label, max_seconds=duration + 120,
                maria_writers=1 if maria else 0)
    watcher = HealthWatcher(watch_env, name_of)
    state = FaultState(
        busiest_peer=lambda: _busiest_peer(load),
        busiest_maria_peer=(lambda: _busiest_peer(load, "maria_peer")) if maria else None,
    )
    dashboard = Dashboard(
        f"django-resilient-db live demo: {TITLES[mode]} ({kind} on {server.address})",
        load, watcher, progress, live=live,
    )
    page = RunState(mode, TITLES[mode], names, [p.what for p in phases], duration)
    print(f"\n== {TITLES[mode]}: {duration:.0f} s of traffic, {len(phases)} phases ==", flush=True)
    try:
        server.start()
        watcher.start()
        load.start()
        dashboard.start()
        if feed is not None:
            feed.follow(page, load, watcher, lambda: list(dashboard.events),
                        server.port if mode == "resilient" else None)
        begun = time.monotonic()
        at = 0.0
        for index, phase in enumerate(phases):
            length = duration * phase.weight / total_weight
            progress.index, progress.name, progress.what = index, phase.name, phase.what
            page.starts.append(load.now())
            page.index = index
            load.phase = index
            dashboard.event(f"phase {phase.name}: {phase.what}")
            if phase.inject is not None:
                _act(dashboard, phase.inject, state)
            sleep_until(begun + at + length * (phase.hold if phase.heal else 1.0))
            if phase.heal is not None:
                _act(dashboard, phase.heal, state)
            at += length
            sleep_until(begun + at)
    finally:
        load.stop()
        dashboard.stop()
        watcher.stop()
        server.stop()
        with contextlib.suppress(Exception):  # cleaning up: report, never mask the real error
            bring_back(state)
    ended = load.now()
    page.ended = ended
    rows = rows_in_database(run_id)
    stats = phase_stats(load.stats.samples, len(phases))
    tallies = check_writes(load.stats.writes.values(), rows, len(phases))
    return RunResult(mode, names, stats, tallies, windows(page.starts, ended))


def _act(dashboard: Dashboard, action: Any, state: FaultState) -> None:
    try:
        dashboard.event(action(state))
    except Exception as exc:  # a fault that could not be injected is shown, the run goes on
        dashboard.event(f"could not {action.__name__.replace('_', ' ')}: {exc}")


def ledger(result: RunResult) -> dict[str, int]:
    """Return the write ledger of a whole run."""
    return totals(result.tallies)


def summary_table(result: RunResult) -> tuple[tuple[str, ...], list[list[str]]]:
    """Return the headers and rows of a run's summary, each row with its time window."""
    headers = (SUMMARY_HEADERS[0], "window", *SUMMARY_HEADERS[1:])
    rows = summary_rows(result.names, result.stats, result.tallies)
    spans = [f"{a:.0f}-{b:.0f} s" for a, b in result.windows]
    if result.windows:
        spans.append(f"{result.windows[0][0]:.0f}-{result.windows[-1][1]:.0f} s")
    for row, window in zip(rows, spans, strict=False):
        row.insert(1, window)
    return headers, rows


def print_summary(result: RunResult) -> None:
    """Print the per-fault summary table of one run."""
    print(f"\nSummary: {TITLES[result.mode]}")
    print("  Each row counts the requests that finished in its window (seconds from the start")
    print("  of traffic); p99 and worst are over all of them, failed ones included; total is")
    print("  the whole run.")
    headers, rows = summary_table(result)
    for line in table(headers, rows):
        print("  " + line)
    book = ledger(result)
    print(
        f"  Writes: {book['acknowledged']} acknowledged, "
        f"{book['lost']} of them missing in the database; "
        f"{book['not_acknowledged']} not acknowledged, of which "
        f"{book['applied_despite_error']} had been applied (checked by key)."
    )
    errors: Counter[str] = Counter()
    for s in result.stats:
        errors.update(s.errors)
    if errors:
        print("  Failures: " + ", ".join(f"{e} x{n}" for e, n in errors.most_common(6)))


def web_summary(result: RunResult) -> dict[str, Any]:
    """Return what the web page shows of a finished run."""
    headers, rows = summary_table(result)
    return {"mode": result.mode, "title": TITLES[result.mode], "headers": list(headers),
            "rows": rows, "ledger": ledger(result)}


def run(args: argparse.Namespace, env: dict[str, str]) -> int:
    """Run the demo as the command line asked; return the exit status."""
    duration = args.duration or (75.0 if args.compare else 135.0)
    modes = ["stock", "resilient"] if args.compare else ["stock" if args.stock else "resilient"]
    kind = args.server or default_kind()
    live = False if args.plain else None
    workdir = Path(tempfile.mkdtemp(prefix="resilient-db-demo-"))
    results: list[RunResult] = []
    ok = False
    feed: WebFeed | None = None
    page: AppServer | None = None
    if getattr(args, "web", True):
        feed = WebFeed(workdir / "dashboard.json", name_of)
        feed.start()
        # The page is the example project itself under a server of its own,
        # so it stays up between the runs of --compare and after the last.
        page = AppServer(kind, dict(env, SHOP_DEMO_STATE=str(feed.path), SHOP_STOCK="0",
                                    MAX_REPLICA_LAG=DEMO_MAX_REPLICA_LAG),
                         workdir / "page.log", web_port=getattr(args, "web_port", 0) or None)
        page.start()
        print(f"Live dashboard: http://{page.address}/demo/", flush=True)
    try:
        for mode in modes:
            result = run_once(mode, duration, kind, env, workdir, live=live, feed=feed)
            results.append(result)
            if feed is not None:
                feed.finish(web_summary(result))
        ok = True
    finally:
        if feed is not None:
            feed.done = True
        for result in results:
            print_summary(result)
        rows: list[list[str]] = []
        if len(results) == 2:
            stock, resilient = results
            print("\nSide by side (served/requests, worst latency, lost/doubled writes/stale "
                  "reads; each over the phase's window):")
            rows = comparison_rows(
                stock.names, (stock.stats, stock.tallies), (resilient.stats, resilient.tallies)
            )
            for line in table(COMPARISON_HEADERS, rows):
                print("  " + line)
            if feed is not None:
                feed.comparison = {"headers": list(COMPARISON_HEADERS), "rows": rows}
        if feed is not None:
            feed.write()
            linger = float(getattr(args, "web_linger", 0) or 0)
            if ok and page is not None and linger > 0:
                print(f"\nThe dashboard stays at http://{page.address}/demo/ for {linger:.0f} s "
                      "(Ctrl-C ends it).", flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    sleep_until(time.monotonic() + linger)
            feed.stop()
        if page is not None:
            page.stop()
        if ok and not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"\nApp server logs kept in {workdir}", file=sys.stderr)
    bad = [
        r for r in results
        if r.mode == "resilient" and any(t.lost or t.doubled for t in r.tallies)
    ]
    if bad:
        print("\nA write was lost or doubled with django-resilient-db: that is a bug.")
        return 1
    return 0
