"""Scopes that let code opt statements in to or out of retry.

By default a statement is retried after a lost connection only when
:func:`resilient_db.sql.is_read_only` proves it is a read. Raw SQL the
classifier cannot prove (a stored function you know is pure, an idempotent
``INSERT ... ON CONFLICT DO NOTHING``) can opt in with :func:`idempotent`;
code that must never see a statement run twice (a read with side effects in
a function the classifier does not know) can opt out with :func:`no_retry`.

Scopes live in a ``ContextVar`` restored with its token, so they nest and
stay correct under threads and asyncio.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar


class RetryMode(enum.Enum):
    """How statements in the current scope are treated after a lost connection."""

    AUTO = "auto"  # reads are retried, anything else is outcome-unknown
    ALWAYS = "always"  # the caller vouches every statement is idempotent
    NEVER = "never"  # nothing is retried


_mode: ContextVar[RetryMode] = ContextVar("resilient_db_retry_mode", default=RetryMode.AUTO)


def current_mode() -> RetryMode:
    """Return the retry mode of the current context."""
    return _mode.get()


@contextmanager
def _scope(mode: RetryMode) -> Iterator[None]:
    token = _mode.set(mode)
    try:
        yield
    finally:
        _mode.reset(token)


def idempotent() -> AbstractContextManager[None]:
    """Treat every statement in the block as safe to re-run after a lost connection."""
    return _scope(RetryMode.ALWAYS)


def no_retry() -> AbstractContextManager[None]:
    """Never re-run a statement of the block; a lost connection raises at once."""
    return _scope(RetryMode.NEVER)


def default_retry() -> AbstractContextManager[None]:
    """Restore the default rule (retry proven reads only) inside an outer scope."""
    return _scope(RetryMode.AUTO)
