"""The test bed's write ledger and paced load loop, shared by the soak and the demo."""

from __future__ import annotations

from resilient_db_testbed.ledger import Tally, settle, totals


def test_settled_write_rules() -> None:
    assert settle(True, 1).exactly_once
    assert settle(True, 0).lost and not settle(False, 0).lost
    assert settle(True, 2).doubled and not settle(True, 2).exactly_once
    assert settle(False, 1).applied_despite_error and not settle(True, 1).applied_despite_error
    assert not settle(False, 0).stored


def test_tally_and_totals() -> None:
    first, second = Tally(), Tally()
    first.add(settle(True, 1))
    first.add(settle(True, 0))
    second.add(settle(False, 1), doubled_by_client=True)
    second.add(settle(False, 0))
    assert (first.sent, first.acknowledged, first.lost, first.doubled) == (2, 2, 1, 0)
    assert (second.applied_despite_error, second.not_applied, second.doubled) == (1, 1, 1)
    assert totals([first, second]) == {
        "sent": 4, "acknowledged": 2, "lost": 1, "doubled": 1, "not_acknowledged": 2,
        "applied_despite_error": 1,
    }


def test_crew_paces_until_stopped_and_reports_stuck_threads() -> None:
    import threading
    import time

    from resilient_db_testbed.load import Crew, windows

    crew = Crew(pause=0.01)
    turns: list[int] = []
    release = threading.Event()

    def loop() -> None:
        while crew.running():
            turns.append(1)
            crew.pause()

    crew.add("loop", loop)
    crew.add("stuck", release.wait)
    crew.start()
    time.sleep(0.1)
    crew.stop(timeout=1.0)
    assert turns and crew.join(time.monotonic() + 0.1) == ["stuck"]
    release.set()
    assert crew.join(time.monotonic() + 5) == []
    assert not Crew(pause=0, deadline=0.0).running()
    assert windows([0.0, 2.0, 5.0], 9.0) == [(0.0, 2.0), (2.0, 5.0), (5.0, 9.0)]
