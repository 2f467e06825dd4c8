"""The demo's bookkeeping: the write check, percentiles and tables (pure logic)."""

from __future__ import annotations

import io

from demo.dashboard import Dashboard, Progress
from demo.load import (
    ACK,
    DUPLICATE,
    FAILED,
    OWN_READ,
    READ,
    UNKNOWN,
    WRITE,
    Load,
    Sample,
    WriteRecord,
)
from demo.observer import HealthWatcher, TargetState
from demo.report import check_writes, percentile, phase_stats, summary_rows, table


def test_percentile_nearest_rank() -> None:
    values = [0.01 * i for i in range(1, 101)]
    assert percentile(values, 0.5) == 0.5
    assert percentile(values, 0.99) == 0.99
    assert percentile(values, 1.0) == 1.0
    assert percentile([], 0.99) == 0.0


def test_write_check_against_rows() -> None:
    writes = [
        WriteRecord("r-0-1", 0, ACK, acks=1),  # present: fine
        WriteRecord("r-0-2", 0, ACK, acks=1),  # acknowledged, no row: lost
        WriteRecord("r-0-3", 1, UNKNOWN),  # no answer, row exists: applied despite error
        WriteRecord("r-0-4", 1, FAILED),  # failed, no row
        WriteRecord("r-0-5", 1, DUPLICATE),  # the server inserted twice: doubled
    ]
    rows = {"r-0-1": 1, "r-0-3": 1, "r-0-5": 1}
    first, second = check_writes(writes, rows, 2)
    assert (first.sent, first.acknowledged, first.lost, first.doubled) == (2, 2, 1, 0)
    assert (second.sent, second.acknowledged, second.lost) == (3, 0, 0)
    assert second.applied_despite_error == 2  # the unknown one and the duplicate's first insert
    assert second.not_applied == 1
    assert second.doubled == 1


def test_two_rows_for_one_key_is_doubled() -> None:
    (tally,) = check_writes([WriteRecord("k", 0, ACK, acks=1)], {"k": 2}, 1)
    assert tally.doubled == 1 and tally.lost == 0


def test_phase_stats_and_summary() -> None:
    samples = [
        Sample(0.1, 0, READ, True, 200, 0.004, "pg_replica"),
        Sample(0.2, 0, WRITE, True, 201, 0.010, "pgbouncer_a"),
        Sample(0.3, 1, READ, False, 503, 1.5, "", "AllTargetsDown"),
        Sample(0.4, 1, OWN_READ, False, 404, 0.003, "pg_replica", "own write not visible"),
    ]
    stats = phase_stats(samples, 2)
    assert (stats[0].requests, stats[0].served, stats[0].failed) == (2, 2, 0)
    assert stats[0].targets == {"pg_replica": 1, "pgbouncer_a": 1}
    assert (stats[1].failed, stats[1].stale, stats[1].worst) == (1, 1, 1.5)
    tallies = check_writes([], {}, 2)
    rows = summary_rows(["baseline", "kill peer"], stats, tallies)
    assert rows[-1][:4] == ["total", "4", "2", "1"]
    lines = table(["fault", "requests"], [["baseline", "2"], ["total", "10"]])
    assert lines[0] == "fault     requests"
    assert lines[3] == "total           10"


def test_plain_dashboard_line() -> None:
    load = Load(1, "r", lambda served: "x")
    load.stats.samples.append(Sample(load.now(), 0, READ, True, 200, 0.004, "pg_replica"))
    watcher = HealthWatcher({}, lambda host, port: f"{host}:{port}")
    watcher.status = "degraded"
    watcher.targets = {"pgbouncer_a": TargetState("pgbouncer_a", False, "cannot_connect", None)}
    out = io.StringIO()
    board = Dashboard("t", load, watcher, Progress(name="kill peer", phases=7, total=60), out=out)
    assert not board.live  # not a terminal: plain lines
    board.event("killed pgbouncer_a")
    board.draw()
    text = out.getvalue()
    assert ">> " in text and "killed pgbouncer_a" in text
    assert "kill peer" in text and "pg_replica 100%" in text
    assert "dbhealth degraded: pgbouncer_a cannot_connect" in text


def test_summary_rows_say_their_time_window() -> None:
    from demo.runner import RunResult, summary_table

    samples = [Sample(1.0, 0, READ, True, 200, 0.004, "pg_replica"),
               Sample(20.0, 1, READ, True, 200, 0.004, "pg_replica")]
    stats = phase_stats(samples, 2)
    result = RunResult("resilient", ["baseline", "kill peer"], stats, check_writes([], {}, 2),
                       [(0.0, 15.2), (15.2, 45.4)])
    headers, rows = summary_table(result)
    assert headers[:2] == ("fault", "window")
    assert [r[:2] for r in rows] == [["baseline", "0-15 s"], ["kill peer", "15-45 s"],
                                     ["total", "0-45 s"]]
