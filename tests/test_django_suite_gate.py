"""The comparison logic of the Django-suite gate (tests/django_suite/gate.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "django_suite"))

gate = pytest.importorskip("gate")


def test_regressed_fixed_missing_and_expected_are_told_apart() -> None:
    stock = {
        "basic.tests.A.test_ok": "pass",
        "basic.tests.A.test_regressed": "pass",
        "basic.tests.A.test_fixed": "error",
        "basic.tests.A.test_missing": "pass",
        "basic.tests.A.test_expected": "pass",
        "setUpClass (cache.tests.DBCacheTests)": "error",
        "basic.tests.A.test_skipped_both": "skip",
    }
    ours = {
        "basic.tests.A.test_ok": "pass",
        "basic.tests.A.test_regressed": "fail",
        "basic.tests.A.test_fixed": "pass",
        "basic.tests.A.test_expected": "error",
        "basic.tests.A.test_skipped_both": "skip",
    }
    expected = {"basic.tests.A.test_expected": "a reason"}
    result = gate.compare("plain", stock, ours, "postgresql", expected)
    assert result.regressed == [("basic.tests.A.test_regressed", "pass", "fail")]
    assert result.missing == ["basic.tests.A.test_missing"]
    assert sorted(result.fixed) == [
        "basic.tests.A.test_fixed", "setUpClass (cache.tests.DBCacheTests)",
    ]
    assert result.expected == [("basic.tests.A.test_expected", "a reason")]
    assert result.counts["cache"]["fixed"] == 1
    assert "REGRESSED basic.tests.A.test_regressed" in gate.render(result)


def test_a_test_left_out_counts_as_an_expected_difference() -> None:
    stock = {"test_utils.tests.T.test_x": "pass"}
    result = gate.compare("plain", stock, {}, "mysql", {"test_utils.tests.T.test_x": "why"})
    assert result.expected == [("test_utils.tests.T.test_x", "why")]
    assert not result.missing


def test_tests_not_run_are_left_out_of_every_suite_parallel_ones_included() -> None:
    import pickle
    import unittest

    from expected import NOT_RUN
    from suite_runner import SuiteWithoutNotRun

    test_id = next(iter(NOT_RUN))
    kept = unittest.FunctionTestCase(lambda: None)
    left = unittest.FunctionTestCase(lambda: None)
    left.id = lambda: test_id  # type: ignore[method-assign]
    suite = SuiteWithoutNotRun([kept, left])
    assert list(suite) == [kept]
    # Django's parallel runner pickles sub-suites for its workers, and builds
    # them with type(suite): the class must be importable by name.
    assert pickle.loads(pickle.dumps(SuiteWithoutNotRun)) is SuiteWithoutNotRun


def test_every_expected_difference_says_why() -> None:
    from expected import EXPECTED, NOT_RUN

    assert set(NOT_RUN) <= set(EXPECTED)
    for test_id, reason in EXPECTED.items():
        assert len(reason) > 40, test_id
        assert test_id.split(":", 1)[-1].count(".") >= 3, test_id
