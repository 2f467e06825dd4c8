"""What happens when a statement fails because its connection died.

One execute wrapper, installed once per connection object, applies DESIGN
rules 1, 3, 4, 5 and 7:

* inside ``atomic()`` (or any open transaction) nothing reconnects: the error
  becomes :class:`~resilient_db.exceptions.ConnectionLost`, the block is
  marked for rollback and the connection is dropped when the block exits;
* outside a transaction a read is re-run on a fresh connection (maybe another
  peer), bounded by ``RETRY.READS`` and ``RETRY.DEADLINE``, with back-off;
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
from resilient_db.exceptions import ConnectionLost, OutcomeUnknown, ResilientDBError
from resilient_db.sql import is_read_only

if TYPE_CHECKING:
    from resilient_db.backends.base import ResilientMixin
    from resilient_db.health.errors import Category

logger = logging.getLogger("resilient_db.backends")

Execute = Callable[[str, Any, bool, dict[str, Any]], Any]


def retry_wrapper(
    execute: Execute, sql: str, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """Run one statement; on a lost connection apply the retry rules."""
    try:
        return execute(sql, params, many, context)
    except ResilientDBError:
        # Already decided by an inner layer (a nested wrapper or a retry).
        raise
    except DatabaseError as exc:
        db = context["connection"]
        if db._rdb_connecting:
            # init_connection_state failed: the connect loop decides.
            raise
        return _on_error(db, exc, execute, sql, params, many, context)


def _on_error(
    db: ResilientMixin,
    exc: DatabaseError,
    execute: Execute,
    sql: str,
    params: Any,
    many: bool,
    context: dict[str, Any],
) -> Any:
    from resilient_db.health.errors import Category, classify

    category = classify(exc, connection=db.connection)
    if category is Category.READ_ONLY:
        note_read_only(db, exc)
        raise exc
    if not category.connection_unusable:
        # Rule 5: integrity, data, syntax, conflicts... never a target failure.
        raise exc
    report_failure(db, exc, category)
    if db.in_atomic_block or not db.autocommit:
        raise lost_in_transaction(db, exc, category) from exc
    mode = current_mode()
    retryable = mode is RetryMode.ALWAYS or (mode is RetryMode.AUTO and is_read_only(sql))
    if not retryable or category is Category.OUTCOME_UNKNOWN:
        from resilient_db.backends.failover import discard_connection

        discard_connection(db)
        db._rdb_reconnect_reason = "outcome_unknown"
        raise OutcomeUnknown(
            f"The connection of {db.alias!r} died after a statement that may write was sent "
            f"({category.value}); it may or may not have taken effect and was not retried."
        ) from exc
    return _retry_read(db, exc, category, execute, sql, params, many, context)


def _retry_read(
    db: ResilientMixin,
    exc: DatabaseError,
    category: Category,
    execute: Execute,
    sql: str,
    params: Any,
    many: bool,
    context: dict[str, Any],
) -> Any:
    from resilient_db.backends.failover import discard_connection
    from resilient_db.conf import get_settings
    from resilient_db.health.errors import classify

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
        try:
            db.ensure_connection()
            with db.wrap_database_errors:
                # The ORM holds this CursorWrapper and fetches from it after
                # execute() returns, so the fresh driver cursor goes inside it.
                cursor_wrapper.cursor = db.create_cursor(name)
            result = execute(sql, params, many, context)
        except ResilientDBError:
            raise
        except DatabaseError as again:
            category = classify(again, connection=db.connection)
            if not category.connection_unusable:
                raise
            report_failure(db, again, category)
            last = again
            continue
        finally:
            db._rdb_deadline = None
        target = db._rdb_target
        logger.warning(
            "Retried a read on %r after %s (attempt %d): %s -> %s",
            db.alias, category.value, attempt,
            failed_target.label if failed_target else "?", target.label if target else "?",
        )
        signals.query_retried.send(
            sender=type(db), alias=db.alias, target=target.label if target else None,
            attempt=attempt, category=category.value, error=type(exc).__name__,
        )
        return result
    raise last


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


def lost_in_transaction(db: ResilientMixin, exc: BaseException, category: Category) -> ConnectionLost:
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
    logger.warning(
        "Connection of %r lost inside a transaction (%s); the transaction is rolled back",
        db.alias, category.value,
    )
    return ConnectionLost(
        f"The connection of {db.alias!r} was lost inside a transaction ({category.value}); "
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
