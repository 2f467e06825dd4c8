"""Primary/replica routing with read-your-writes pinning.

Importing this package reads no settings and opens no connection.
"""

from __future__ import annotations

from resilient_db.routers.context import unit_of_work
from resilient_db.routers.replica_choice import routing_stats
from resilient_db.routers.router import PinningReplicaRouter, ReplicaRouter, get_replica
from resilient_db.routers.routing_scopes import db_write, use_primary_db, use_replica

__all__ = [
    "PinningReplicaRouter",
    "ReplicaRouter",
    "db_write",
    "get_replica",
    "routing_stats",
    "unit_of_work",
    "use_primary_db",
    "use_replica",
]
