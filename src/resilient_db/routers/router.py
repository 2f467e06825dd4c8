"""``ReplicaRouter`` and ``PinningReplicaRouter``.

A *group* is a primary alias with the ``REPLICAS`` listed for it in
``RESILIENT_DB`` (:mod:`resilient_db.topology`); there may be several, and
none needs to be "default". Which
group a model belongs to comes from, in order: the instance hint's database,
the ``db_for_write`` answer of the other routers in ``DATABASE_ROUTERS``, and
finally Django's default alias if it is a group's primary. Anything outside a
group gets no opinion (``None``), so routers listed after this one still
decide.

Routers hold no state: Django builds each once per process. Everything that
varies per request lives in :mod:`resilient_db.routers.context`.
"""

from __future__ import annotations

from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, router
from django.db.models import Model

from resilient_db.routers import context
from resilient_db.routers.replica_choice import choose_replica, cold_start, fallback
from resilient_db.topology import Topology, get_topology


def _db_of(obj: object) -> str | None:
    state = getattr(obj, "_state", None)
    db = getattr(state, "db", None)
    return db if isinstance(db, str) else None


class ReplicaRouter:
    """Send writes to a group's primary and reads to a healthy, fresh replica.

    Reads go to the primary inside ``atomic()`` on the primary, for instances
    loaded from the primary, after this unit of work wrote to the primary, and
    inside ``use_primary_db``. Pins carried by the pinning cookie are honoured
    only by :class:`PinningReplicaRouter`.
    """

    honour_pins = False

    def _primary_for(
        self, model: type[Model] | None, hints: dict[str, Any], topology: Topology
    ) -> str | None:
        instance = hints.get("instance")
        if instance is not None:
            db = _db_of(instance)
            if db is not None:
                return topology.group_of.get(db)
        for other in router.routers:
            if isinstance(other, ReplicaRouter):
                continue
            method = getattr(other, "db_for_write", None)
            if method is None:
                continue
            chosen = method(model, **hints)
            if chosen:
                return topology.group_of.get(chosen)
        return DEFAULT_DB_ALIAS if DEFAULT_DB_ALIAS in topology.replicas else None

    def read_alias(self, primary: str, topology: Topology, instance_db: str | None = None) -> str:
        """Return the alias a read on ``primary``'s group should use now."""
        if instance_db == primary:
            return primary
        scope = context.scope_for(primary)
        if scope == "primary":
            return primary
        unit = context.current_unit()
        min_lsn: int | None = None
        if scope is None and unit is not None:
            if unit.wrote_to(primary):
                return primary
            if self.honour_pins:
                pinned, lsn = unit.pin_for(primary)
                if pinned:
                    if lsn is None:
                        return primary
                    min_lsn = lsn
        # Checked last of the cheap tests: it costs a thread-local lookup, and
        # it must win over use_replica (a transaction sees its own writes).
        if connections[primary].in_atomic_block:
            return primary
        skipped: list[str] = []
        replica = choose_replica(primary, topology, unit, min_lsn=min_lsn, skipped=skipped)
        if replica is not None:
            return replica
        if min_lsn is not None:
            # Pinned until a replica replays the client's write: not a fallback.
            return primary
        if skipped and all(reason == "lag_unmeasured" for reason in skipped):
            # A new process before its monitor's first probe: not degraded.
            return cold_start(primary)
        return fallback(primary, "no_usable_replica")

    def db_for_read(self, model: type[Model], **hints: Any) -> str | None:
        """Return a replica (or the primary) of the model's group, or None outside groups."""
        topology = get_topology()
        if not topology.replicas:
            return None
        primary = self._primary_for(model, hints, topology)
        if primary is None:
            return None
        instance = hints.get("instance")
        instance_db = _db_of(instance) if instance is not None else None
        return self.read_alias(primary, topology, instance_db)

    def db_for_write(self, model: type[Model], **hints: Any) -> str | None:
        """Return the model's group primary (never a replica), or None outside groups."""
        topology = get_topology()
        if not topology.replicas:
            return None
        return self._primary_for(model, hints, topology)

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:
        """Allow relations between objects of the same group; no opinion otherwise."""
        topology = get_topology()
        db1, db2 = _db_of(obj1), _db_of(obj2)
        group1 = topology.group_of.get(db1) if db1 else None
        if group1 is not None and group1 == (topology.group_of.get(db2) if db2 else None):
            return True
        return None

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        """Refuse migrations on replicas; no opinion on any other alias."""
        if db in get_topology().replica_set:
            return False
        return None


class PinningReplicaRouter(ReplicaRouter):
    """A :class:`ReplicaRouter` that also honours pins carried across requests.

    A pin comes from ``PinningMiddleware``'s signed cookie (or a pin handed to
    a background task): the client recently wrote, so its reads go to the
    primary for ``PINNING["SECONDS"]``, or in LSN mode until a replica has
    replayed its write.
    """

    honour_pins = True


_pinning = PinningReplicaRouter()


def get_replica(primary: str = DEFAULT_DB_ALIAS) -> str:
    """Return the alias a raw read on ``primary``'s group should use now.

    Honours health, lag, scopes, pins, writes of this unit of work and
    ``atomic()``; returns ``primary`` itself when it has no replicas.
    """
    topology = get_topology()
    group = topology.group_of.get(primary)
    if group is None:
        return primary
    return _pinning.read_alias(group, topology)
