"""Exceptions raised by django-resilient-db.

Every database-facing exception subclasses the matching ``django.db`` class, so
``except OperationalError`` clauses in existing code keep working. The driver's
own exception is always kept as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import OperationalError


class ResilientDBError(Exception):
    """Base class of every error this project raises."""


class ConnectionLost(ResilientDBError, OperationalError):
    """The connection died where it must not be replaced silently.

    Raised inside ``atomic()`` once the block has used the connection: the
    transaction is gone, the block rolls back, and the next use after the
    block reconnects.
    """


class OutcomeUnknown(ResilientDBError, OperationalError):
    """A write or COMMIT was sent and the connection died before the answer.

    The statement may or may not have taken effect. It is never retried; the
    caller decides (for example by checking for the row by its unique key).
    """


class NodeNotReady(ResilientDBError, OperationalError):
    """A server accepted the connection but may not serve queries yet.

    A Galera node outside the Primary component, not ready or not Synced:
    nothing was run on it, so the connection goes to another target.
    """


@dataclass(frozen=True)
class Attempt:
    """One failed connection attempt: which target, and why (no secrets)."""

    target: str
    category: str
    error: str


class AllTargetsDown(ResilientDBError, OperationalError):
    """No target of an alias accepted a connection."""

    def __init__(self, alias: str, attempts: Sequence[Attempt]) -> None:
        self.alias = alias
        self.attempts = tuple(attempts)
        if attempts:
            detail = "; ".join(f"{a.target}: {a.category}: {a.error}" for a in attempts)
        else:
            detail = "every target is marked down and none is due for a re-check"
        super().__init__(f"No usable database target for alias {alias!r} ({detail})")
