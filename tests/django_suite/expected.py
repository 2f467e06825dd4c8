"""The reviewed list of expected differences between Django's engines and ours.

Each entry names one test of Django's own suite (optionally prefixed with
``postgresql:`` or ``mysql:``) and says why a Django user would accept that
our engine behaves differently there. Keep it short: every entry is a place
where we are not a drop-in replacement.
"""

from __future__ import annotations

#: Tests that cannot even run with our engines: they are left out of the
#: suite (the gate then reports them missing, as expected), because their
#: failure is a RecursionError that Django's parallel runner cannot send back
#: from a worker, and that would abort the whole run.
NOT_RUN: dict[str, str] = {
    "test_utils.tests.AssertNumQueriesUponConnectionTests."
    "test_ignores_connection_configuration_queries": (
        "patches BaseDatabaseWrapper.ensure_connection with a mock that calls the "
        "connection's own ensure_connection; an engine that overrides ensure_connection "
        "(Django's documented hook, which ours uses to replace a dead connection before "
        "use) calls the mock back through super() and recurses forever. Only a test "
        "that patches Django's base class does this."
    ),
}

EXPECTED: dict[str, str] = {
    **NOT_RUN,
    "backends.base.test_base.ExecuteWrapperTests.test_wrapper_connection_specific": (
        "asserts the exact list connection.execute_wrappers; ours holds one more, the "
        "retry wrapper that every resilient connection installs (outermost, so a "
        "retry re-runs the user's wrappers too). A user's wrappers still run in order."
    ),
    # New in Django 6.1.3; the same result on the code before the restructuring.
    "backends.base.test_base.DatabaseWrapperTests.test_release_memory_without_garbage_collection": (
        "Django 6.1.3 checks that a dropped connection wrapper is freed without the "
        "garbage collector; ours keeps reference cycles (its resilience session and the "
        "retry wrapper refer back to it), so it is freed only when the collector runs. "
        "Known gap, to be fixed with weak references."
    ),
}
