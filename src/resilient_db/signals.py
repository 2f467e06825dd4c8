"""Signals sent by django-resilient-db.

Every signal is sent with ``sender`` set to the class that sends it and these
keyword arguments (never a password):

``target_down``      alias, target (label), category, error
``target_up``        alias, target, down_for (seconds or None)
``reconnected``      alias, target, reason
``query_retried``    alias, target, attempt, category, error, outcome ("ok", "lost",
                     "refused", "error"; "rerun" for transaction blocks)
``failover``         alias, from_target, to_target, category
``pinned``           alias (primary), reason ("write", "db_write", "cookie", "scope")
``replica_skipped``  alias (replica), primary, reason ("down", "lag", "unknown_lag", "lag_unmeasured", "lsn"), lag
``primary_fallback`` alias (primary), reason ("no_usable_replica", "lag_unmeasured")
``role_mismatch``    alias, target, role (what the server is), expected ("replica")
"""

from __future__ import annotations

from django.dispatch import Signal

target_down = Signal()
target_up = Signal()
reconnected = Signal()
query_retried = Signal()
failover = Signal()
pinned = Signal()
replica_skipped = Signal()
primary_fallback = Signal()
role_mismatch = Signal()
