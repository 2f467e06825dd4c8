"""``retry_atomic``: re-run a whole transaction when re-running it is safe.

A transaction that lost its connection before COMMIT was rolled back by the
server, and one that failed on a serialization failure or deadlock was rolled
back too: running the whole function again is safe, provided the function's
only side effects are in that database. A COMMIT that died
(:class:`~resilient_db.exceptions.OutcomeUnknown`) is never re-run.

Two forms::

    @retry_atomic(using="default")
    def transfer(a, b, amount): ...

    for attempt in retry_atomic(using="default"):
        with attempt:
            ...   # the body of the transaction

A ``with`` statement cannot run its body twice, hence the loop form.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction

from resilient_db import signals
from resilient_db.backends.reads import backoff
from resilient_db.conf import get_settings
from resilient_db.exceptions import AllTargetsDown, ConnectionLost, OutcomeUnknown

logger = logging.getLogger("resilient_db.backends")

P = ParamSpec("P")
R = TypeVar("R")


def is_retryable_transaction_error(exc: BaseException) -> bool:
    """Return True when a failed transaction can safely be run again from the start."""
    if isinstance(exc, (OutcomeUnknown, AllTargetsDown)):
        return False
    if isinstance(exc, ConnectionLost):
        return True
    if not isinstance(exc, DatabaseError):
        return False
    from resilient_db.health.errors import Category, classify

    category = classify(exc)
    return category in (Category.RETRYABLE_CONFLICT, Category.CONNECTION_LOST)


class _Attempt:
    """One run of the transaction: an ``atomic()`` that records a retryable failure."""

    def __init__(self, owner: RetryAtomic, number: int) -> None:
        self.owner = owner
        self.number = number
        self._atomic = transaction.atomic(
            using=owner.using, savepoint=owner.savepoint, durable=owner.durable
        )

    def __enter__(self) -> _Attempt:
        self._atomic.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            self._atomic.__exit__(exc_type, exc, tb)
        except BaseException as commit_error:  # noqa: BLE001 - judged below, re-raised if not retryable
            if exc is None:
                exc = commit_error
            if not self.owner._should_retry(exc, self.number):
                raise
            self.owner._failed = exc
            return True
        if exc is not None and self.owner._should_retry(exc, self.number):
            self.owner._failed = exc
            return True  # swallow: the loop runs the body again
        self.owner._done = exc is None
        return False


class RetryAtomic:
    """Run a transaction again from the start on a lost connection or a conflict."""

    def __init__(
        self,
        using: str | None = None,
        *,
        attempts: int | None = None,
        deadline: float | None = None,
        savepoint: bool = True,
        durable: bool = False,
    ) -> None:
        self.using = using or DEFAULT_DB_ALIAS
        self.attempts = attempts
        self.deadline = deadline
        self.savepoint = savepoint
        self.durable = durable
        self._failed: BaseException | None = None
        self._done = False
        self._ends_at = 0.0

    def _limits(self) -> tuple[int, float, float]:
        cfg = get_settings().retry
        attempts = self.attempts if self.attempts is not None else cfg.atomic_attempts
        deadline = self.deadline if self.deadline is not None else cfg.deadline
        return max(attempts, 1), deadline, cfg.backoff

    def _take_failure(self) -> BaseException | None:
        failed, self._failed = self._failed, None
        return failed

    def _should_retry(self, exc: BaseException, number: int) -> bool:
        attempts, _, _ = self._limits()
        if number >= attempts or time.monotonic() >= self._ends_at:
            return False
        # Inside an outer atomic() the outer transaction is already broken:
        # only the outermost block can start over.
        if connections[self.using].in_atomic_block:
            return False
        return is_retryable_transaction_error(exc)

    def __iter__(self) -> Iterator[_Attempt]:
        attempts, deadline, base = self._limits()
        self._ends_at = time.monotonic() + deadline
        self._done = False
        for number in range(1, attempts + 1):
            self._failed = None
            yield _Attempt(self, number)
            failed = self._take_failure()
            if failed is None:
                return
            pause = min(backoff(base, number), max(self._ends_at - time.monotonic(), 0.0))
            logger.warning(
                "Transaction on %r failed (%s), running it again (attempt %d of %d)",
                self.using, type(failed).__name__, number + 1, attempts,
            )
            signals.query_retried.send(
                sender=RetryAtomic, alias=self.using, target=None, attempt=number,
                category="transaction", error=type(failed).__name__, outcome="rerun",
            )
            time.sleep(pause)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            result: Any = None
            for attempt in RetryAtomic(
                self.using, attempts=self.attempts, deadline=self.deadline,
                savepoint=self.savepoint, durable=self.durable,
            ):
                with attempt:
                    result = func(*args, **kwargs)
            return result  # type: ignore[no-any-return]

        return inner


def retry_atomic(
    using: str | Callable[..., Any] | None = None,
    *,
    attempts: int | None = None,
    deadline: float | None = None,
    savepoint: bool = True,
    durable: bool = False,
) -> Any:
    """Return a decorator / attempt iterator that re-runs a transaction when it is safe."""
    if callable(using):
        return RetryAtomic()(using)
    return RetryAtomic(
        using, attempts=attempts, deadline=deadline, savepoint=savepoint, durable=durable
    )
