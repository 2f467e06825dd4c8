"""The test bed's write ledger: the lost / doubled rules the soak and the demo share."""

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
