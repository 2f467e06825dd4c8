"""What happens when a statement fails because its connection died.

One execute wrapper, installed once per connection object, applies DESIGN
rules 1, 3, 4, 5 and 7:

* inside ``atomic()`` (or any open transaction) nothing reconnects: the error
  becomes :class:`~resilient_db.exceptions.ConnectionLost`, the block is
  marked for rollback and the connection is dropped when the block exits;
* outside a transaction a read is re-run on a fresh connection (maybe another
  peer), bounded by ``RETRY.READS`` and ``RETRY.DEADLINE``, with back-off,
  inside a read-only transaction: a "read" that writes through a function is
  refused by the server there and becomes ``OutcomeUnknown``, never a second write;
* a write that may have reached the server becomes
  :class:`~resilient_db.exceptions.OutcomeUnknown` and is never re-run;
* query errors (integrity, syntax...) pass through untouched and never mark a
  target down; a read-only refusal records the target's role.

The success path costs one ``try`` and a function call.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError

from resilient_db import signals
from resilient_db.backends.scopes import RetryMode, current_mode
from resilient_db.backends.stall import StatementStalled, Watching, describe, watchdog
from resilient_db.exceptions import ConnectionLost, OutcomeUnknown, ResilientDBError
from resilient_db.sql import is_read_only
from resilient_db.vendors import read_only_begin

if TYPE_CHECKING:
    from resilient_db.backends.base import ResilientMixin
    from resilient_db.health.errors import Category

logger = logging.getLogger("resilient_db.backends")

Execute = Callable[[str, Any, bool, dict[str, Any]], Any]


def retry_wrapper(
    execute: Execute, sql: str, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """Run one statement; on a lost connection apply the retry rules."""
    db = context["connection"]
    timeout = db._rdb_stall_timeout
    if timeout is not None:
        return _watched(db, timeout, execute, sql, params, many, context)
    # Seen by the monitor's heartbeat: a statement that runs long has its
    # server checked (health/heartbeat.py). Cleared under the lock, so its
    # socket is never shut once it has returned.
    db._rdb_busy_since = time.monotonic()
    try:
        try:
            return execute(sql, params, many, context)
        finally:
            with db._rdb_busy_lock:
                db._rdb_busy_since = 0.0
    except ResilientDBError:
        # Already decided by an inner layer (a nested wrapper or a retry).
        raise
    except DatabaseError as exc:
        if db._rdb_connecting:
            # init_connection_state failed: the connect loop decides.
            raise
        return _on_error(db, exc, execute, sql, params, many, context)


def _watched(
    db: ResilientMixin,
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
        token = dog.register(db._rdb_stall_fd, timeout)
        try:
            return execute(sql, params, many, context)
        finally:
            stalled = dog.unregister(token)
    except ResilientDBError:
        raise
    except DatabaseError as exc:
        if db._rdb_connecting:
            raise
        return _on_error(db, exc, execute, sql, params, many, context, stalled)


def _on_error(
    db: ResilientMixin,
    exc: DatabaseError,
    execute: Execute,
    sql: str,
    params: Any,
    many: bool,
    context: dict[str, Any],
    stalled: float | None = None,
) -> Any:
    from resilient_db.health.errors import Category, classify

    known: Category | None = None
    if stalled is None:
        known = classify(exc, connection=db.connection)
        if known is Category.READ_ONLY:
            note_read_only(db, exc)
            if db.in_atomic_block or not db.autocommit or db._rdb_read_only_retry:
                # Inside a transaction the block's earlier statements ran on
                # this server: nothing moves; the block fails as it would.
                raise exc
            return _retry_on_writer(db, exc, execute, sql, params, many, context)
    category = lost_connection(db, exc, stalled, known)
    if category is None:
        # Rule 5: integrity, data, syntax, conflicts... never a target failure.
        raise exc
    close_dead_cursor(context)
    what = describe(category.value, stalled)
    if db.in_atomic_block or not db.autocommit:
        raise lost_in_transaction(db, exc, category, what) from exc
    if stalled is None and not_run(exc):
        return _run_elsewhere(db, exc, execute, sql, params, many, context)
    mode = current_mode()
    # A proven read is retried only where the server refuses writes (rule 3);
    # the idempotent() scope vouches for the statement, writes included.
    guard = read_only_begin(db.vendor) if mode is RetryMode.AUTO else None
    retryable = mode is RetryMode.ALWAYS or (
        mode is RetryMode.AUTO and guard is not None and is_read_only(sql)
    )
    if not retryable or category is Category.OUTCOME_UNKNOWN:
        from resilient_db.backends.failover import discard_connection

        discard_connection(db)
        db._rdb_reconnect_reason = "outcome_unknown"
        raise OutcomeUnknown(
            f"The connection of {db.alias!r} died after a statement that may write was sent "
            f"({what}); it may or may not have taken effect and was not retried."
        ) from exc
    error = StatementStalled.__name__ if stalled is not None else type(exc).__name__
    return _retry_read(
        db, exc, category, what, error, guard, execute, sql, params, many, context
    )


def _retry_on_writer(
    db: ResilientMixin,
    exc: DatabaseError,
    execute: Execute,
    sql: str,
    params: Any,
    many: bool,
    context: dict[str, Any],
) -> Any:
    """Run a statement refused as read-only once more, on a writable target (rule 13).

    The server refused it before running it (SQLSTATE 25006, MySQL 1290/1836),
    so nothing was written: a switchover demoted this server, and the
    statement belongs on the writable one. Once: a second refusal is raised.
    """
    from resilient_db.backends.failover import discard_connection
    from resilient_db.health.errors import Category

    cursor_wrapper = context["cursor"]
    name = getattr(cursor_wrapper.cursor, "name", None)
    refused_on = db._rdb_target
    discard_connection(db)
    db._rdb_reconnect_reason = "read_only"
    db._rdb_want_writer = True
    try:
        db.ensure_connection()
        with db.wrap_database_errors:
            cursor_wrapper.cursor = db.create_cursor(name)
    except DatabaseError:
        # No writable target (or none reachable): the refusal is the answer.
        _retried(db, 1, Category.READ_ONLY, type(exc).__name__, "lost")
        raise exc  # noqa: B904 - the refusal, with its driver cause, is the error
    logger.warning(
        "A write on %r was refused as read-only by %s; ran it on %s",
        db.alias, refused_on.label if refused_on else "?",
        db._rdb_target.label if db._rdb_target else "?",
    )
    db._rdb_read_only_retry = True
    try:
        result = retry_wrapper(execute, sql, params, many, context)
    except BaseException:
        _retried(db, 1, Category.READ_ONLY, type(exc).__name__, "error")
        raise
    finally:
        db._rdb_read_only_retry = False
    _retried(db, 1, Category.READ_ONLY, type(exc).__name__, "ok")
    return result


def lost_connection(
    db: ResilientMixin,
    exc: BaseException,
    stalled: float | None = None,
    category: Category | None = None,
) -> Category | None:
    """Return how ``db``'s connection was lost (reported to the registry), or None if it wasn't."""
    from resilient_db.health.errors import Category, classify

    if stalled is not None:
        # The watchdog shut the socket: whatever the driver says, the
        # connection was lost because the server stopped answering.
        report_stall(db, stalled, exc)
        return Category.CONNECTION_LOST
    if category is None:
        category = classify(exc, connection=db.connection)
    if not category.connection_unusable:
        return None
    report_failure(db, exc, category)
    return category


def close_dead_cursor(context: dict[str, Any]) -> None:
    """Close the driver cursor of a lost connection now, swallowing what it raises."""
    # Django's query code closes the cursor in an ``except`` clause after a
    # failed execute(), and CursorWrapper.close() reaches the driver without
    # error translation: MySQLdb's close() reads pending results and raises a
    # raw "(2006) server has gone away", which would replace our
    # OutcomeUnknown / ConnectionLost. A cursor closed here closes as a no-op.
    wrapper = context.get("cursor")
    cursor = getattr(wrapper, "cursor", None)
    if cursor is not None:
        with contextlib.suppress(Exception):
            cursor.close()


def _retry_read(
    db: ResilientMixin,
    exc: DatabaseError,
    category: Category,
    what: str,
    error: str,
    guard: str | None,
    execute: Execute,
    sql: str,
    params: Any,
    many: bool,
    context: dict[str, Any],
) -> Any:
    from resilient_db.backends.failover import discard_connection
    from resilient_db.conf import get_settings

    cfg = get_settings().retry
    deadline = time.monotonic() + cfg.deadline
    cursor_wrapper = context["cursor"]
    name = getattr(cursor_wrapper.cursor, "name", None)
    last: DatabaseError = exc
    for attempt in range(1, cfg.reads + 1):
        pause = backoff(cfg.backoff, attempt)
        if time.monotonic() + pause >= deadline:
            break
        time.sleep(pause)
        failed_target = db._rdb_target
        discard_connection(db)
        db._rdb_reconnect_reason = category.value
        db._rdb_deadline = deadline
        watch = Watching(db)
        try:
            db.ensure_connection()
            with db.wrap_database_errors:
                # The ORM holds this CursorWrapper and fetches from it after
                # execute() returns, so the fresh driver cursor goes inside it.
                cursor_wrapper.cursor = db.create_cursor(name)
            db._rdb_busy_since = time.monotonic()
            try:
                with watch:
                    result = run_guarded(db, guard, execute, sql, params, many, context)
            finally:
                with db._rdb_busy_lock:
                    db._rdb_busy_since = 0.0
        except ResilientDBError:
            # No target could be reached (AllTargetsDown) or an inner layer decided.
            _retried(db, attempt, category, error, "lost")
            raise
        except DatabaseError as again:
            if guard is not None and watch.stalled is None and refused_write(again):
                _retried(db, attempt, category, error, "refused")
                raise _refused(db, what, again) from again
            lost = lost_connection(db, again, watch.stalled)
            if lost is None:
                _retried(db, attempt, category, error, "error")
                raise
            _retried(db, attempt, category, error, "lost")
            category = lost
            what = describe(category.value, watch.stalled)
            last = again
            continue
        finally:
            db._rdb_deadline = None
        target = db._rdb_target
        logger.warning(
            "Retried a read on %r after %s (attempt %d): %s -> %s",
            db.alias, what, attempt,
            failed_target.label if failed_target else "?", target.label if target else "?",
        )
        _retried(db, attempt, category, error, "ok")
        return result
    raise last


# PostgreSQL read_only_sql_transaction; MySQL/MariaDB "cannot execute in a READ
# ONLY transaction" (1792), and --read-only / super-read-only (1290, 1836) when
# the retry landed on a read-only server: each says the statement writes.
_REFUSED_SQLSTATES = frozenset({"25006"})
_REFUSED_ERRNOS = frozenset({1792, 1290, 1836})


def run_guarded(
    db: ResilientMixin,
    begin: str | None,
    execute: Execute,
    sql: str,
    params: Any,
    many: bool,
    context: dict[str, Any],
) -> Any:
    """Run the statement inside a read-only transaction opened by ``begin`` (None: as is)."""
    if begin is None:
        return execute(sql, params, many, context)
    # BEGIN/COMMIT go through their own driver cursor, bypassing Django:
    # its autocommit flag and atomic state never change, and the result set
    # of the statement's cursor (which the ORM reads after we return) stays.
    _control(db, begin)
    try:
        result = execute(sql, params, many, context)
    except BaseException:
        # A refused write aborted the transaction: end it so the connection
        # is back in autocommit. A dead connection fails here too: ignored.
        with contextlib.suppress(Exception):
            _control(db, "ROLLBACK")
        raise
    # COMMIT, not ROLLBACK: a server-side cursor declared WITH HOLD is
    # materialised at COMMIT (still read-only) and survives it; a ROLLBACK
    # would destroy it. A client-side result is already in the driver.
    _control(db, "COMMIT")
    return result


def _control(db: ResilientMixin, statement: str) -> None:
    with db.wrap_database_errors:
        cursor = db.connection.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()


def refused_write(exc: BaseException) -> bool:
    """Tell whether ``exc`` is the server refusing a write in a read-only transaction."""
    for error in (exc, exc.__cause__):
        if error is None:
            continue
        code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if code in _REFUSED_SQLSTATES:
            return True
        args = getattr(error, "args", ())
        if args and isinstance(args[0], int) and args[0] in _REFUSED_ERRNOS:
            return True
    return False


def not_run(exc: BaseException) -> bool:
    """Tell whether a Galera node refused ``exc``'s statement: it ran nowhere (1047, 1180)."""
    for error in (exc, exc.__cause__):
        args: tuple[Any, ...] = tuple(getattr(error, "args", ()))
        if len(args) < 2 or not isinstance(args[1], str):
            continue
        text = args[1].lower()
        if args[0] == 1047 and "wsrep" in text:
            return True
        # A commit the node could not replicate: rolled back, committed nowhere.
        if args[0] == 1180 and "not connected to primary component" in text:
            return True
    return False


def _run_elsewhere(
    db: ResilientMixin,
    exc: DatabaseError,
    execute: Execute,
    sql: str,
    params: Any,
    many: bool,
    context: dict[str, Any],
) -> Any:
    # A Galera node outside the Primary component refuses a statement before
    # running it (ERROR 1047): read or write, it ran nowhere, so it goes once
    # to another node (the refusing one is already marked down). Any error of
    # that one run is the caller's: nothing is sent a third time.
    from resilient_db.backends.failover import discard_connection
    from resilient_db.health.errors import Category

    failed_target = db._rdb_target
    discard_connection(db)
    db._rdb_reconnect_reason = Category.SERVER_STARTING.value
    db.ensure_connection()
    with db.wrap_database_errors:
        context["cursor"].cursor = db.create_cursor(getattr(context["cursor"].cursor, "name", None))
    result = execute(sql, params, many, context)
    target = db._rdb_target
    logger.warning(
        "%s of %r refused a statement before running it (not ready); ran it on %s",
        failed_target.label if failed_target else "A node", db.alias,
        target.label if target else "?",
    )
    return result


def _refused(db: ResilientMixin, what: str, exc: BaseException) -> OutcomeUnknown:
    logger.warning(
        "The retry of a read on %r was refused as a write (read-only transaction): "
        "outcome of the first attempt unknown (%s)",
        db.alias, what,
    )
    return OutcomeUnknown(
        f"The connection of {db.alias!r} died while a statement ran ({what}); its retry "
        "was refused by the server because the statement writes (it ran in a read-only "
        "transaction), so the first attempt may or may not have taken effect."
    )


def _retried(db: ResilientMixin, attempt: int, category: Category, error: str, outcome: str) -> None:
    target = db._rdb_target
    signals.query_retried.send(
        sender=type(db), alias=db.alias, target=target.label if target else None,
        attempt=attempt, category=category.value, error=error, outcome=outcome,
    )


def backoff(base: float, attempt: int) -> float:
    """Return the pause before retry ``attempt``: exponential with full jitter on top."""
    if base <= 0:
        return 0.0
    step = base * 2.0 ** (attempt - 1)
    return step + random.uniform(0, step)  # noqa: S311 - jitter, not cryptography


def report_failure(db: ResilientMixin, exc: BaseException, category: Category) -> None:
    """Tell the registry that ``db``'s current target failed with ``category``."""
    from resilient_db.health.registry import get_registry

    target = db._rdb_target
    if target is not None:
        get_registry().record_failure(target, exc, category)


def report_stall(db: ResilientMixin, seconds: float, exc: BaseException | None = None) -> None:
    """Tell the registry that ``db``'s target left a statement unanswered: it is down."""
    from resilient_db.health.errors import Category
    from resilient_db.health.registry import get_registry

    target = db._rdb_target
    stalled = StatementStalled(seconds, exc)
    logger.warning(
        "A statement on %r got no answer from %s for %.1f s (STALL_TIMEOUT): "
        "the stall watchdog shut its connection",
        db.alias, target.label if target is not None else "its server", seconds,
    )
    if target is None:
        return
    # A lost connection only makes a target suspect (a killed backend says
    # nothing about its server); a statement unanswered for STALL_TIMEOUT
    # says the server or the path to it is gone: a definite failure, so the
    # target is down now and new connections avoid it.
    get_registry().record_failure(target, stalled, Category.CONNECTION_LOST, definite=True)


def lost_in_transaction(
    db: ResilientMixin, exc: BaseException, category: Category, what: str | None = None
) -> ConnectionLost:
    """Mark ``db``'s transaction broken and return the ConnectionLost to raise (rule 1)."""
    if db.in_atomic_block:
        # close() inside atomic() keeps the handle, sets closed_in_transaction
        # and needs_rollback; Atomic.__exit__ drops the handle at the outermost
        # block, so the first use after the block opens a new connection.
        # Never connect() here: it would reset in_atomic_block and silently
        # switch the rest of the block to autocommit.
        # The socket is already dead: closing it is best effort.
        with contextlib.suppress(Exception):
            db.close()
        db._rdb_reconnect_reason = category.value
    # With autocommit turned off by hand (no atomic()), the dead handle stays:
    # the caller's rollback() or the request boundary gets rid of it, and no
    # statement silently runs in a new autocommit session.
    what = what or category.value
    logger.warning(
        "Connection of %r lost inside a transaction (%s); the transaction is rolled back",
        db.alias, what,
    )
    return ConnectionLost(
        f"The connection of {db.alias!r} was lost inside a transaction ({what}); "
        "the transaction was rolled back and nothing in it was committed."
    )


def note_read_only(db: ResilientMixin, exc: BaseException) -> None:
    """Record that ``db``'s target refused a write; the next connection seeks a writer."""
    from resilient_db.health.errors import Category
    from resilient_db.health.registry import get_registry

    target = db._rdb_target
    if target is not None:
        registry = get_registry()
        registry.record_failure(target, exc, Category.READ_ONLY)
        registry.record_role(target, "replica")
    db._rdb_want_writer = True
    # Replaced at the next use outside a transaction (ensure_connection).
    db._rdb_discard = True
    logger.warning(
        "%s of %r refused a write (read-only); the next connection goes to a writable target",
        target.label if target else "The server", db.alias,
    )
