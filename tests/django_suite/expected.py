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
}
