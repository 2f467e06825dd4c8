"""Start the monitor when the router skips a replica.

The first connection of a monitored alias starts the monitor (the backend's
failover does). A site whose aliases use Django's own engines, with only the
replica router from this app, never makes such a connection; and no read ever
connects to a skipped replica, so only the monitor's probes can see it come
back (or measure its lag). The router only reads the registry and signals
``replica_skipped``; this receiver, connected in ``AppConfig.ready()``, makes
sure this process's monitor runs (cheap when it does; restarted after a fork).
"""

from __future__ import annotations

from resilient_db.health import monitor
from resilient_db.signals import replica_skipped


def on_replica_skipped(reason: str | None = None, **kwargs: object) -> None:
    """Start the monitor unless the replica only waits for the client's write (LSN)."""
    if reason != "lsn":
        monitor.ensure_monitor()


DISPATCH_UID = "resilient_db.health.monitor_start"


def connect() -> None:
    """Connect :func:`on_replica_skipped` to ``replica_skipped`` (idempotent)."""
    replica_skipped.connect(on_replica_skipped, dispatch_uid=DISPATCH_UID)


def disconnect() -> None:
    """Disconnect it again (tests routing against a stand-in registry)."""
    replica_skipped.disconnect(dispatch_uid=DISPATCH_UID)
