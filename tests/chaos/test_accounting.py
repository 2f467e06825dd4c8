"""The soak's verdict rules, on hand-made logs (no database)."""

from __future__ import annotations

from collections import Counter

from resilient_db_testbed.chaos import Window
from tests.chaos.accounting import Snapshot, judge
from tests.chaos.workload import (
    COMMITTED,
    FAILED,
    INCR,
    SINGLE,
    TXN,
    UNDOCUMENTED,
    UNKNOWN,
    Read,
    WorkerLog,
    Write,
)


def _log(*writes: Write, reads: tuple[Read, ...] = ()) -> WorkerLog:
    log = WorkerLog("t0", writes=list(writes), reads=list(reads), finished=True)
    log.counters = {"default": "ctr", "mysql": "ctr-m"}
    return log


def _snap(authors: dict[str, int] | None = None, books: dict[str, int] | None = None,
          ctr: int = 0) -> dict[str, Snapshot]:
    return {
        "default": Snapshot(Counter(authors or {}), Counter(books or {}), {"ctr": ctr}),
        "mysql": Snapshot(Counter(), Counter(), {"ctr-m": 0}),
    }


def _rules(report: object) -> set[str]:
    return {v.split(":", 1)[0] for v in report.violations}  # type: ignore[attr-defined]


def test_clean_run_has_no_violation() -> None:
    log = _log(
        Write("k1", "default", SINGLE, 1, 2, COMMITTED),
        Write("k2", "default", SINGLE, 1, 2, FAILED, "x.AllTargetsDown: down"),
        Write("k3", "bouncers", SINGLE, 1, 2, UNKNOWN, "x.OutcomeUnknown: ?"),
        Write("k4", "default", TXN, 1, 2, COMMITTED),
        Write("i1", "default", INCR, 1, 2, COMMITTED),
        Write("i2", "default", INCR, 1, 2, UNKNOWN),
    )
    windows = [Window("restart:pg_primary", 0.5, 3.0, ("default", "bouncers"))]
    report = judge([log], windows, _snap({"k1": 1, "k3": 1, "k4": 1}, {"k4/1": 1, "k4/2": 1}, 2),
                   grace=1.0, run_started=0.0)
    assert report.violations == []
    assert report.counts["writes.unknown_committed"] == 1


def test_every_broken_rule_is_reported() -> None:
    log = _log(
        Write("lost", "default", SINGLE, 10, 11, COMMITTED),
        Write("twice", "default", SINGLE, 10, 11, COMMITTED),
        Write("ghost", "default", SINGLE, 10, 11, FAILED, "x.ConnectionLost: gone"),
        Write("odd", "default", SINGLE, 10, 11, UNDOCUMENTED, "x.ProgrammingError: no"),
        Write("torn", "default", TXN, 10, 11, COMMITTED),
        Write("refused", "default", SINGLE, 10, 11, FAILED, "x.AllTargetsDown: down"),
        Write("i1", "default", INCR, 10, 11, COMMITTED),
        reads=(Read("replica", 10, 11, False, "x.AllTargetsDown: down"),),
    )
    snap = _snap({"twice": 2, "ghost": 1, "torn": 1, "extra": 1}, {"torn/1": 1}, ctr=3)
    report = judge([log], [], snap, grace=1.0, run_started=0.0)
    assert _rules(report) == {
        "acknowledged_write_lost", "written_twice", "failed_write_committed",
        "undocumented_exception", "transaction_torn", "write_refused_while_a_target_was_up",
        "counter_out_of_bounds", "read_failed", "phantom_row",
    }


def test_reads_fail_only_inside_a_down_window_plus_grace() -> None:
    window = Window("stop:pg_replica", 5.0, 8.0, ("replica",))
    reads = (
        Read("replica", 6, 6.1, False, "x.AllTargetsDown: down"),  # inside
        Read("replica", 8.5, 8.6, False, "x.AllTargetsDown: down"),  # within the grace
        Read("replica", 9.5, 9.6, False, "x.AllTargetsDown: down"),  # after it
        Read("default", 6, 6.1, False, "x.AllTargetsDown: down"),  # not down then
        Read("routed:default", 6, 6.1, False, "x.AllTargetsDown: down", "replica"),  # routed there
        Read("routed:default", 6, 6.1, False, "x.AllTargetsDown: down", "default"),  # not down
    )
    report = judge([_log(reads=reads)], [window], _snap(), grace=1.0, run_started=0.0)
    assert report.counts["reads.failed_while_all_down"] == 3
    assert report.counts["reads.failed_outside_down_windows"] == 3
