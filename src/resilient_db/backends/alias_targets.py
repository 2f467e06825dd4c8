"""The targets a connection of an alias may use, and when to go back to a preferred one.

An alias's own server comes first, then its ``PEERS``; a replica alias falls
back to its group primary's targets when none of its own answers.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from resilient_db.conf import get_settings
from resilient_db.health.targets import Target, build_targets

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    from resilient_db.backends.session import Session


def targets_of(db: BaseDatabaseWrapper) -> tuple[Target, ...]:
    """Return the targets of ``db`` from its live settings_dict (own server first)."""
    cfg = get_settings().alias(db.alias)
    # With Django's pool every target has a pool of its own (pooling.py).
    return build_targets(db.alias, db.settings_dict, cfg)


def primary_fallback_targets(db: BaseDatabaseWrapper) -> tuple[Target, ...]:
    """Return the group primary's targets when ``db`` is a replica alias, else ``()``.

    A replica that is down must not fail a read: nothing has been sent while
    connecting, so the same read can safely go to the primary instead. The
    targets keep the primary's alias, so their health is the primary's own
    record; their overrides carry the primary's full connection settings.
    """
    settings = get_settings()
    primary = settings.primary_of(db.alias)
    if primary is None:
        return ()
    from django.db import connections

    base = connections[primary].settings_dict
    keys = ("HOST", "PORT", "NAME", "USER", "PASSWORD", "OPTIONS")
    out = []
    for target in build_targets(primary, base, settings.alias(primary)):
        merged = target.settings_dict(base)
        out.append(dataclasses.replace(target, overrides={k: merged.get(k) for k in keys}))
    return tuple(out)


def back_to_own_target(session: Session, now: float) -> bool:
    """Tell whether the connection should leave its fallback target for a preferred one.

    A replica alias that fell back to its primary returns to its own
    servers once one of them is usable again; a connection that failed
    over to a lower-priority target returns to a preferred one (a node
    back in service after a leader change or a Galera rejoin). Checked
    at most once a second, and only between units of work.
    """
    from resilient_db.health.registry import get_registry

    target, db = session.target, session.db
    if target is None or now - session.fallback_checked < 1.0:
        return False
    session.fallback_checked = now
    registry = get_registry()
    targets = targets_of(db)
    if target.alias != db.alias:
        return any(registry.is_available(t) for t in targets)
    if get_settings().alias(db.alias).policy != "priority" or target not in targets:
        return False
    preferred = targets[: targets.index(target)]
    # Only targets the registry has seen usable: an unknown one is not a
    # reason to drop a working connection.
    for candidate in preferred:
        record = registry.health(candidate)
        if record.usable and record.updated_at is not None:
            return True
    return False
