"""What the registry tells operators after a transition: log lines and signals.

Called by the registry outside its lock, with the record before and after
the event. Errors arrive masked. ``target_down`` / ``target_up`` fire once
per transition, in the process that saw it; a receiver that raises is logged
and never breaks the report that triggered it.
"""

from __future__ import annotations

import logging
from typing import Any

from resilient_db import signals
from resilient_db.health.records import State, TargetHealth
from resilient_db.health.targets import Target
from resilient_db.health.transitions import Event, Failed, ProbeTaken, RoleSeen, Succeeded

__all__ = ["announce"]

logger = logging.getLogger("resilient_db.health")


def announce(
    target: Target,
    old: TargetHealth,
    new: TargetHealth,
    event: Event,
    now: float,
    *,
    sender: type,
    send: bool,
) -> None:
    """Log what ``event`` changed from ``old`` to ``new``; send signals when ``send``."""
    if isinstance(event, Succeeded):
        if old.state is not State.UP:
            _came_up(target, old, now, sender=sender, send=send)
    elif isinstance(event, Failed):
        _failed(target, old, new, event, sender=sender, send=send)
    elif isinstance(event, RoleSeen):
        if new is not old:
            _role_changed(target, old, event.role, sender=sender, send=send)
    elif isinstance(event, ProbeTaken):
        logger.debug("probing %s of alias %s", target.label, target.alias)


def _came_up(target: Target, old: TargetHealth, now: float, *, sender: type, send: bool) -> None:
    down_for = old.down_for(now)
    logger.info(
        "%s of alias %s is up again (down %.1fs)", target.label, target.alias, down_for or 0.0
    )
    if send:
        _signal(sender, "target_up", alias=target.alias, target=target.label, down_for=down_for)


def _failed(
    target: Target,
    old: TargetHealth,
    new: TargetHealth,
    event: Failed,
    *,
    sender: type,
    send: bool,
) -> None:
    category = event.category.value
    if event.category.role_changed:
        if old.role != "replica" and new.wants_primary:
            logger.warning(
                "%s of alias %s refused a write as read-only; writes go elsewhere: %s",
                target.label,
                target.alias,
                event.error,
            )
    elif old.state is State.UP and new.state is State.DOWN:
        logger.warning(
            "%s of alias %s is down (%s): %s; next check in %.1fs",
            target.label,
            target.alias,
            category,
            event.error,
            new.backoff,
        )
        if send:
            _signal(
                sender, "target_down",
                alias=target.alias, target=target.label, category=category, error=event.error,
            )
    elif old.state is State.PROBING and new is not old:
        logger.info(
            "%s of alias %s is still down (%s); next check in %.1fs",
            target.label,
            target.alias,
            category,
            new.backoff,
        )


def _role_changed(
    target: Target, old: TargetHealth, role: str, *, sender: type, send: bool
) -> None:
    if old.wants_primary and role == "replica":
        logger.warning("%s of alias %s is read-only (a standby)", target.label, target.alias)
    elif not old.wants_primary and role == "primary":
        # A replica alias pointing at a writable server: its reads load the
        # primary, its "lag" is 0, and a write through it would succeed.
        logger.warning(
            "%s of replica alias %s is a writable primary, not a replica: check its "
            "HOST and REPLICAS",
            target.label,
            target.alias,
        )
        if send:
            _signal(
                sender, "role_mismatch",
                alias=target.alias, target=target.label, role=role, expected="replica",
            )
    elif old.role is not None:
        logger.info(
            "%s of alias %s changed role: %s -> %s", target.label, target.alias, old.role, role
        )


def _signal(sender: type, name: str, **kwargs: Any) -> None:
    signal = getattr(signals, name)
    for receiver, result in signal.send_robust(sender=sender, **kwargs):
        if isinstance(result, Exception):
            logger.error("receiver %r of %s failed: %r", receiver, name, result, exc_info=result)
