"""Rule 3: a read that lost its connection outside a transaction runs again, read-only.

The read is re-run on a fresh connection (maybe another peer), bounded by
``RETRY.READS`` and ``RETRY.DEADLINE``, with back-off, inside a read-only
transaction: a "read" that writes through a function is refused by the
server there and becomes ``OutcomeUnknown``, never a second write.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from django.db import DatabaseError

from resilient_db.backends.stall import StatementStalled, Watching, describe
from resilient_db.conf import get_settings
from resilient_db.exceptions import OutcomeUnknown, ResilientDBError
from resilient_db.health.error_codes import refused_write

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    from resilient_db.backends.session import Session
    from resilient_db.backends.statement import Statement
    from resilient_db.health.errors import Category

logger = logging.getLogger("resilient_db.backends")

class Loss(NamedTuple):
    """A lost connection: the driver's error, how it was lost, the stall if the watchdog cut it."""

    exc: DatabaseError
    category: Category
    stalled: float | None = None

    @property
    def what(self) -> str:
        """Return the loss for messages."""
        return describe(self.category.value, self.stalled)

    @property
    def error(self) -> str:
        """Return the class name of the error, as ``query_retried`` gives it."""
        return StatementStalled.__name__ if self.stalled is not None else type(self.exc).__name__


def retry_read(session: Session, stmt: Statement, loss: Loss, guard: str | None) -> Any:
    """Run a read that lost its connection again, up to ``RETRY.READS`` times in the deadline.

    ``guard`` opens the read-only transaction each run goes in (None: the
    ``idempotent()`` scope vouched for the statement, which runs as is).
    """
    cfg = get_settings().retry
    deadline = time.monotonic() + cfg.deadline
    error = loss.error  # what caused the retries, the same in every signal
    for attempt in range(1, cfg.reads + 1):
        pause = backoff(cfg.backoff, attempt)
        if time.monotonic() + pause >= deadline:
            break
        time.sleep(pause)
        failed_target = session.target
        report = functools.partial(session.retried, attempt, loss.category, error)
        result, again = _run_again(session, stmt, loss, deadline, guard, report)
        if again is not None:
            loss = again
            continue
        target = session.target
        logger.warning(
            "Retried a read on %r after %s (attempt %d): %s -> %s",
            session.db.alias, loss.what, attempt,
            failed_target.label if failed_target else "?", target.label if target else "?",
        )
        report("ok")
        return result
    raise loss.exc


def _run_again(
    session: Session,
    stmt: Statement,
    loss: Loss,
    deadline: float,
    guard: str | None,
    report: Callable[[str], None],
) -> tuple[Any, Loss | None]:
    """Run the read once on a fresh connection: its result, or how it was lost again."""
    db = session.db
    session.discard(loss.category.value)
    session.deadline = deadline
    watch = Watching(session)
    try:
        db.ensure_connection()
        stmt.reopen(db)
        with watch:
            return session.run_busy(lambda: run_guarded(db, guard, stmt)), None
    except ResilientDBError:
        # No target could be reached (AllTargetsDown) or an inner layer decided.
        report("lost")
        raise
    except DatabaseError as again:
        if guard is not None and watch.stalled is None and refused_write(again):
            report("refused")
            raise _refused(db, loss.what, again) from again
        lost = session.lost_connection(again, watch.stalled)
        if lost is None:
            report("error")
            raise
        report("lost")
        return None, Loss(again, lost, watch.stalled)
    finally:
        session.deadline = None


def run_guarded(db: BaseDatabaseWrapper, begin: str | None, stmt: Statement) -> Any:
    """Run the statement inside a read-only transaction opened by ``begin`` (None: as is)."""
    if begin is None:
        return stmt.run()
    # BEGIN/COMMIT go through their own driver cursor, bypassing Django:
    # its autocommit flag and atomic state never change, and the result set
    # of the statement's cursor (which the ORM reads after we return) stays.
    _control(db, begin)
    try:
        result = stmt.run()
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


def _control(db: BaseDatabaseWrapper, statement: str) -> None:
    with db.wrap_database_errors:
        cursor = db.connection.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()


def _refused(db: BaseDatabaseWrapper, what: str, exc: BaseException) -> OutcomeUnknown:
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


def backoff(base: float, attempt: int) -> float:
    """Return the pause before retry ``attempt``: exponential with full jitter on top."""
    if base <= 0:
        return 0.0
    step = base * 2.0 ** (attempt - 1)
    return step + random.uniform(0, step)  # noqa: S311 - jitter, not cryptography
