"""A Django test runner that records the outcome of every test in a JSON file.

Django's ``runtests.py`` builds its runner from ``settings.TEST_RUNNER``; the
gate's settings point here. Outcomes are recorded in the main process, where
the parallel runner replays every worker's events, so ``--parallel`` works.
"""

from __future__ import annotations

import json
import os
import time
import unittest
from pathlib import Path
from typing import Any

from django.test.runner import DiscoverRunner

#: Outcomes that count as "the test passed" when the two runs are compared.
PASSED = frozenset({"pass", "skip", "xfail"})
_RANK = {"pass": 0, "xfail": 0, "skip": 1, "fail": 2, "error": 3, "xpass": 2}


def _record_into(outcomes: dict[str, str], test: Any, outcome: str) -> None:
    key = test.id()
    previous = outcomes.get(key)
    # A failed subtest must not be hidden by the test's own success afterwards.
    if previous is None or _RANK[outcome] > _RANK[previous]:
        outcomes[key] = outcome


def recording(base: type[unittest.TextTestResult]) -> type[unittest.TextTestResult]:
    """Return a subclass of ``base`` that fills ``RecordingRunner.outcomes``."""

    class RecordingResult(base):  # type: ignore[valid-type,misc]
        def startTest(self, test: Any) -> None:  # noqa: N802 - unittest's name
            super().startTest(test)
            self._began = time.perf_counter()

        def stopTest(self, test: Any) -> None:  # noqa: N802
            super().stopTest(test)
            began = getattr(self, "_began", None)
            if began is not None:
                # Meaningful in one process only: a parallel run replays events.
                RecordingRunner.durations[test.id()] = time.perf_counter() - began

        def addSuccess(self, test: Any) -> None:  # noqa: N802 - unittest's name
            super().addSuccess(test)
            _record_into(RecordingRunner.outcomes, test, "pass")

        def addFailure(self, test: Any, err: Any) -> None:  # noqa: N802
            super().addFailure(test, err)
            _record_into(RecordingRunner.outcomes, test, "fail")

        def addError(self, test: Any, err: Any) -> None:  # noqa: N802
            super().addError(test, err)
            _record_into(RecordingRunner.outcomes, test, "error")

        def addSkip(self, test: Any, reason: str) -> None:  # noqa: N802
            super().addSkip(test, reason)
            _record_into(RecordingRunner.outcomes, test, "skip")

        def addExpectedFailure(self, test: Any, err: Any) -> None:  # noqa: N802
            super().addExpectedFailure(test, err)
            _record_into(RecordingRunner.outcomes, test, "xfail")

        def addUnexpectedSuccess(self, test: Any) -> None:  # noqa: N802
            super().addUnexpectedSuccess(test)
            _record_into(RecordingRunner.outcomes, test, "xpass")

        def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:  # noqa: N802
            super().addSubTest(test, subtest, err)
            if err is not None:
                failed = issubclass(err[0], test.failureException)
                _record_into(RecordingRunner.outcomes, test, "fail" if failed else "error")

    return RecordingResult


class SuiteWithoutNotRun(unittest.TestSuite):
    """A TestSuite that leaves out the tests of ``expected.NOT_RUN``.

    DiscoverRunner builds every suite through ``self.test_suite``, the
    per-class sub-suites of a parallel run included (and pickles them for the
    workers, hence a class at module level), so a test left out here is left
    out everywhere; the gate then finds it missing, as expected.
    """

    def addTest(self, test: Any) -> None:  # noqa: N802 - unittest's name
        from expected import NOT_RUN

        if isinstance(test, unittest.TestCase) and test.id() in NOT_RUN:
            return
        super().addTest(test)


class RecordingRunner(DiscoverRunner):
    """DiscoverRunner that writes ``{test id: outcome}`` to ``$RDB_SUITE_RESULTS``."""

    outcomes: dict[str, str] = {}
    durations: dict[str, float] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if os.environ.get("RDB_SUITE_ENGINE") == "ours":
            self.test_suite = SuiteWithoutNotRun

    def get_resultclass(self) -> Any:
        base = super().get_resultclass() or unittest.TextTestResult
        return recording(base)

    def run_suite(self, suite: Any, **kwargs: Any) -> Any:
        try:
            return super().run_suite(suite, **kwargs)
        finally:
            path = os.environ.get("RDB_SUITE_RESULTS")
            if path:
                Path(path).write_text(json.dumps(RecordingRunner.outcomes, sort_keys=True, indent=0))
                Path(path).with_suffix(".durations.json").write_text(
                    json.dumps(RecordingRunner.durations, sort_keys=True, indent=0)
                )
