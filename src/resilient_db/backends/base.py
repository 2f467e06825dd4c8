"""The mixin that makes a vendor ``DatabaseWrapper`` resilient.

``class DatabaseWrapper(ResilientMixin, vendor.DatabaseWrapper)`` keeps the
vendor's ``vendor``, ``Database``, features, operations and exception
translation; the mixin only overrides Django's documented extension points:

* ``connect`` / ``get_connection_params``: choose a healthy target (the
  alias's own server or a peer) with per-attempt timeouts (failover.py);
* ``ensure_connection``: replace a dead connection before use, never inside
  a transaction (rule 1);
* ``create_cursor``: a connection found closed inside ``atomic()`` is
  ``ConnectionLost``, not the driver's error (rule 1);
* ``_commit``: a COMMIT that dies is outcome-unknown, never retried (rule 4);
* one execute wrapper for retry of reads and outcome-unknown writes (retry.py).

What the mixin knows about its connection lives in one
:class:`~resilient_db.backends.session.Session`, ``self.resilience``; the
overrides below delegate to it and to the collaborators that receive it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError

from resilient_db.backends.alias_targets import back_to_own_target
from resilient_db.backends.failover import connect_with_failover
from resilient_db.backends.liveness import driver_says_closed
from resilient_db.backends.pooling import is_pooled, live_pooled_connection
from resilient_db.backends.retry import retry_wrapper
from resilient_db.backends.session import Session
from resilient_db.backends.stall import Watching, describe
from resilient_db.connect_timeouts import apply_connect_timeout
from resilient_db.exceptions import ConnectionLost, OutcomeUnknown

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    _Base = BaseDatabaseWrapper
else:
    _Base = object

logger = logging.getLogger("resilient_db.backends")


class ResilientMixin(_Base):
    """Reconnect, safe retry, peer failover and role checks over any vendor wrapper."""

    #: The resilience state of this connection (backends/session.py).
    resilience: Session

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resilience = Session(self, self._vendor_connect, self._vendor_is_usable)
        self._install_wrapper()

    def _install_wrapper(self) -> None:
        # Outermost position (index 0): a retry re-runs every inner wrapper too.
        if retry_wrapper not in self.execute_wrappers:
            self.execute_wrappers.insert(0, retry_wrapper)

    def _vendor_connect(self) -> None:
        super().connect()

    def _vendor_is_usable(self) -> bool:
        return super().is_usable()

    # ----- connecting -------------------------------------------------------

    def get_connection_params(self) -> dict[str, Any]:
        """Return the driver parameters of the target being connected to."""
        target = self.resilience.target
        original = self.settings_dict
        merged = target.settings_dict(original) if target is not None and target.overrides else None
        if merged is not None:
            # A merged copy for this call only: the alias's own dict is never
            # replaced (django-proxysql lost alias options and test renames so).
            self.settings_dict = merged
        try:
            params: dict[str, Any] = super().get_connection_params()
        finally:
            self.settings_dict = original
        options = (merged or original).get("OPTIONS") or {}
        apply_connect_timeout(self.vendor, params, options, self.resilience.attempt_timeout)
        return params

    def connect(self) -> None:
        """Connect to the first healthy target of the alias (own server, then peers)."""
        self._install_wrapper()
        self.resilience.stall_timeout = None  # statements run while connecting are not watched
        connect_with_failover(self.resilience)
        self.resilience.connected()

    def get_new_connection(self, conn_params: Any) -> Any:
        """Open a driver connection; one taken from a pool is checked before use."""
        conn = super().get_new_connection(conn_params)
        if not is_pooled(self):
            return conn
        # Opening a connection outside a pool is proof of life; taking one
        # out of a pool is not (see pooling.py).
        return live_pooled_connection(
            self, conn, lambda: super(ResilientMixin, self).get_new_connection(conn_params)
        )

    def _close(self) -> None:
        self.resilience.closing()
        super()._close()  # type: ignore[misc]

    def ensure_connection(self) -> None:
        """Guarantee a live connection; replace a dead one outside a transaction."""
        session = self.resilience
        if (
            self.connection is not None
            and not self.in_atomic_block
            and self.autocommit
            and not session.connecting
        ):
            now = time.monotonic()
            if session.must_replace or session.suspect(now):
                session.replace_if_dead()
            elif back_to_own_target(session, now):
                session.discard("replica_back")
            session.last_used = now
        super().ensure_connection()

    def close_if_unusable_or_obsolete(self) -> None:
        """Close a dead or obsolete connection at a request boundary, never reconnecting."""
        # Django's version calls get_autocommit(), which goes through
        # ensure_connection(): a dead connection would be replaced right there,
        # inside request_started, where a replica that is down would turn into
        # a 500 before the router had any chance to fall back to the primary.
        # Here a dead connection is only dropped; the next real use reconnects.
        session = self.resilience
        if (
            self.connection is not None
            and not self.in_atomic_block
            and (session.must_replace or session.suspect(time.monotonic()))
            and (session.must_replace or driver_says_closed(self.connection)
                 or not session.ping())
        ):
            session.discard("dead_connection")
            return
        super().close_if_unusable_or_obsolete()

    def is_usable(self) -> bool:
        """Ping the connection; a ping left unanswered for STALL_TIMEOUT says no."""
        # The resilience checks ping through the session rather than through
        # is_usable(), which belongs to Django's CONN_HEALTH_CHECKS: code that
        # watches is_usable() (Django's own tests do) sees only Django's calls.
        return self.resilience.ping()

    def create_cursor(self, name: str | None = None) -> Any:
        """Create a driver cursor; a connection found closed inside atomic() is ConnectionLost."""
        try:
            return super().create_cursor(name)
        except self.Database.Error as exc:  # type: ignore[attr-defined]
            if not self.in_atomic_block:
                # Outside a transaction ensure_connection() has already
                # replaced a dead connection; anything else is the driver's.
                raise
            if self.closed_in_transaction:
                # Closed earlier in this block (by Django, the caller, or a
                # loss already reported): the block is broken, nothing more.
                raise ConnectionLost(
                    f"The connection of {self.alias!r} was closed inside a transaction; "
                    "the transaction was rolled back and nothing in it was committed."
                ) from exc
            category = self.resilience.lost_connection(exc)
            if category is None:
                raise
            raise self.resilience.lost_in_transaction(exc, category) from exc

    # ----- transactions -----------------------------------------------------

    def set_autocommit(
        self, autocommit: bool, force_begin_transaction_with_broken_autocommit: bool = False
    ) -> None:
        """Turn autocommit on or off; never reconnect just to turn it back on."""
        if (
            autocommit
            and self.connection is None
            and not self.in_atomic_block
            and not self.resilience.connecting
            and self.settings_dict["AUTOCOMMIT"]
        ):
            # Atomic.__exit__ turns autocommit back on in a finally clause,
            # also after a lost COMMIT closed the connection. Reconnecting just
            # for that would replace the real error (OutcomeUnknown) with a
            # connect error; the next connect() starts in autocommit anyway.
            self.autocommit = True
            if self.run_commit_hooks_on_set_autocommit_on:
                self.run_and_clear_commit_hooks()
                self.run_commit_hooks_on_set_autocommit_on = False
            return
        super().set_autocommit(autocommit, force_begin_transaction_with_broken_autocommit)

    def _set_autocommit(self, autocommit: bool) -> None:
        try:
            super()._set_autocommit(autocommit)  # type: ignore[misc]
        except DatabaseError as exc:
            if self.resilience.connecting:
                raise  # connect_with_failover reports it and tries the next target
            category = self.resilience.lost_connection(exc)
            if category is None:
                raise
            self.resilience.discard(category.value)
            if autocommit:
                # Leaving a transaction whose COMMIT or ROLLBACK already
                # answered (or already failed loudly): the outcome is known,
                # only the connection is gone. The next use reconnects.
                logger.info(
                    "Connection of %r lost while restoring autocommit (%s); dropped",
                    self.alias, category.value,
                )
                return
            # Entering atomic(): on MySQL turning autocommit off is a round
            # trip (SET autocommit=0). Nothing of the block has run yet.
            logger.warning(
                "Connection of %r lost while starting a transaction (%s)",
                self.alias, category.value,
            )
            raise ConnectionLost(
                f"The connection of {self.alias!r} was lost while starting a transaction "
                f"({category.value}); nothing in the transaction ran."
            ) from exc

    def _commit(self) -> None:
        watch = Watching(self.resilience)
        try:
            with watch:
                super()._commit()  # type: ignore[misc]
        except DatabaseError as exc:
            category = self.resilience.lost_connection(exc, watch.stalled)
            if category is None:
                raise
            what = describe(category.value, watch.stalled)
            logger.warning(
                "COMMIT on %r lost its connection (%s): outcome unknown, not retried",
                self.alias, what,
            )
            raise OutcomeUnknown(
                f"COMMIT on {self.alias!r} lost its connection ({what}); the "
                "transaction may or may not have been committed and was not retried."
            ) from exc
