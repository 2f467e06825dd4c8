"""What happens when a statement fails because its connection died.

One execute wrapper, installed once per connection object, applies DESIGN
rules 1, 3, 4, 5 and 7:

* inside ``atomic()`` (or any open transaction) nothing reconnects: the error
  becomes :class:`~resilient_db.exceptions.ConnectionLost`, the block is
  marked for rollback and the connection is dropped when the block exits;
* outside a transaction a read is re-run on a fresh connection (reads.py);
* a statement the server refused before running it (read-only, rule 13; a
  Galera node not ready) runs once more on another target;
* a write that may have reached the server becomes
  :class:`~resilient_db.exceptions.OutcomeUnknown` and is never re-run;
* query errors (integrity, syntax...) pass through untouched and never mark a
  target down; a read-only refusal records the target's role.

The success path costs one ``try`` and a function call.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError

from resilient_db.backends.reads import Loss, retry_read
from resilient_db.backends.scopes import RetryMode, current_mode
from resilient_db.backends.stall import describe, watchdog
from resilient_db.backends.statement import Execute, Statement
from resilient_db.exceptions import OutcomeUnknown, ResilientDBError
from resilient_db.health.error_codes import not_run
from resilient_db.health.errors import Category, classify
from resilient_db.sql import is_read_only
from resilient_db.vendors import read_only_begin

if TYPE_CHECKING:
    from resilient_db.backends.session import Session

logger = logging.getLogger("resilient_db.backends")


def retry_wrapper(
    execute: Execute, sql: str, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """Run one statement; on a lost connection apply the retry rules."""
    session: Session = context["connection"].resilience
    timeout = session.stall_timeout
    if timeout is not None:
        return _watched(session, timeout, execute, sql, params, many, context)
    # Seen by the monitor's heartbeat: a statement that runs long has its
    # server checked (health/heartbeat.py). Cleared under the lock, so its
    # socket is never shut once it has returned.
    session.busy_since = time.monotonic()
    try:
        try:
            return execute(sql, params, many, context)
        finally:
            with session.busy_lock:
                session.busy_since = 0.0
    except ResilientDBError:
        # Already decided by an inner layer (a nested wrapper or a retry).
        raise
    except DatabaseError as exc:
        if session.connecting:
            # init_connection_state failed: the connect loop decides.
            raise
        return _on_error(session, Statement(execute, sql, params, many, context), exc)


def _watched(
    session: Session,
    timeout: float,
    execute: Execute,
    sql: str,
    params: Any,
    many: bool,
    context: dict[str, Any],
) -> Any:
    # STALL_TIMEOUT is set: the watchdog shuts the socket if no answer comes in time.
    stalled: float | None = None
    try:
        dog = watchdog()
        token = dog.register(session.stall_fd, timeout)
        try:
            return execute(sql, params, many, context)
        finally:
            stalled = dog.unregister(token)
    except ResilientDBError:
        raise
    except DatabaseError as exc:
        if session.connecting:
            raise
        return _on_error(session, Statement(execute, sql, params, many, context), exc, stalled)


def _on_error(
    session: Session, stmt: Statement, exc: DatabaseError, stalled: float | None = None
) -> Any:
    db = session.db
    known: Category | None = None
    if stalled is None:
        known = classify(exc, connection=db.connection)
        if known is Category.READ_ONLY:
            session.note_read_only(exc)
            if db.in_atomic_block or not db.autocommit or session.rerunning:
                # Inside a transaction the block's earlier statements ran on
                # this server: nothing moves; the block fails as it would.
                raise exc
            return rerun_elsewhere(session, stmt, exc, Category.READ_ONLY)
    category = session.lost_connection(exc, stalled, known)
    if category is None:
        # Rule 5: integrity, data, syntax, conflicts... never a target failure.
        raise exc
    stmt.close_dead_cursor()
    what = describe(category.value, stalled)
    if db.in_atomic_block or not db.autocommit:
        raise session.lost_in_transaction(exc, category, what) from exc
    if stalled is None and not_run(exc):
        if session.rerunning:
            raise exc  # the one re-run was refused too: nothing is sent a third time
        return rerun_elsewhere(session, stmt, exc, Category.SERVER_STARTING)
    mode = current_mode()
    # A proven read is retried only where the server refuses writes (rule 3);
    # the idempotent() scope vouches for the statement, writes included.
    guard = read_only_begin(db.vendor) if mode is RetryMode.AUTO else None
    retryable = mode is RetryMode.ALWAYS or (
        mode is RetryMode.AUTO and guard is not None and is_read_only(stmt.sql)
    )
    if not retryable or category is Category.OUTCOME_UNKNOWN:
        session.discard("outcome_unknown")
        raise OutcomeUnknown(
            f"The connection of {db.alias!r} died after a statement that may write was sent "
            f"({what}); it may or may not have taken effect and was not retried."
        ) from exc
    return retry_read(session, stmt, Loss(exc, category, stalled), guard)


def rerun_elsewhere(
    session: Session, stmt: Statement, exc: DatabaseError, category: Category
) -> Any:
    """Run once more, on another target, a statement the server refused before running it.

    Two refusals prove that nothing ran (health/error_codes.py): a write
    refused as read-only (SQLSTATE 25006, MySQL 1290/1836, rule 13: a
    switchover demoted this server, and the statement belongs on the writable
    one), and a Galera node outside the Primary component or not ready (ERROR
    1047/1180: read or write, it ran nowhere; the refusing node is already
    marked down). Once: a refusal of the re-run is raised as it is.
    """
    db = session.db
    refused_on = session.target
    error = type(exc).__name__
    session.discard(category.value)
    if category is Category.READ_ONLY:
        session.want_writer = True
    try:
        db.ensure_connection()
        stmt.reopen(db)
    except DatabaseError:
        session.retried(1, category, error, "lost")
        if category is Category.READ_ONLY:
            # No writable target (or none reachable): the refusal is the answer.
            raise exc  # noqa: B904 - the refusal, with its driver cause, is the error
        raise
    logger.warning(
        "%s of %r refused a statement before running it (%s); running it once on %s",
        refused_on.label if refused_on else "The server", db.alias, category.value,
        session.target.label if session.target else "?",
    )
    session.rerunning = True
    try:
        result = retry_wrapper(*stmt)
    except BaseException:
        session.retried(1, category, error, "error")
        raise
    finally:
        session.rerunning = False
    session.retried(1, category, error, "ok")
    return result
