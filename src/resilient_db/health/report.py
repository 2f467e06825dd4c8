"""Build the health report shared by ``dbhealth``, the readiness view and the health-check class.

One fresh, parallel probe of every target of the chosen aliases, combined with
what the registry knows (failures, back-off, since when), and judged by the
status rules:

- an alias can be served when at least one of its targets is usable: it
  answers, and, for an alias that must take writes (``ROLE`` ``"primary"`` or
  one that lists ``REPLICAS``), it is writable;
- a replica alias that is down, or whose every usable target lags beyond
  ``MAX_REPLICA_LAG`` or ``MAX_REPLICA_LAG_BYTES`` (health/freshness.py), only
  degrades: reads fall back to its primary;
- ``unavailable`` when some non-replica alias cannot be served, ``degraded``
  when anything is down or lagging, ``healthy`` otherwise.

The JSON form (:meth:`Report.as_dict`) is a versioned schema documented in
``docs/dbhealth.md``; bump :data:`SCHEMA_VERSION` on any incompatible change.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from django.db import connections

from resilient_db.conf import get_settings
from resilient_db.health.freshness import LagLimits, lag_bytes, measurement_verdict
from resilient_db.health.group_lag import position_targets, probed_limits
from resilient_db.health.probes import ProbeResult, probe_many
from resilient_db.health.redact import mask, secrets_of
from resilient_db.health.registry import TargetHealth, get_registry
from resilient_db.health.targets import Target, targets_for
from resilient_db.topology import AliasKind, Topology, topology_of

SCHEMA_VERSION = 1

Status = Literal["healthy", "degraded", "unavailable"]
AliasState = Literal["ok", "degraded", "unavailable"]

EXIT_CODES: Mapping[str, int] = {"healthy": 0, "degraded": 1, "unavailable": 2}


@dataclass(frozen=True)
class TargetRow:
    """One target: the fresh probe, the registry's record and the verdict."""

    target: Target
    kind: AliasKind
    expected_role: str | None
    probe: ProbeResult
    health: TargetHealth
    usable: bool
    lagging: bool
    error: str | None  # why the probe failed; masked again here: defence in depth
    note: str | None = None  # a caveat of a successful probe, e.g. "lag unknown: ..."

    @property
    def id(self) -> str:
        """Return a stable id that reveals no host: ``alias#index``."""
        return f"{self.target.alias}#{self.target.index}"

    @property
    def is_peer(self) -> bool:
        """Return whether this is a peer rather than the alias's own server."""
        return self.target.index > 0


@dataclass(frozen=True)
class AliasReport:
    """The verdict for one alias."""

    alias: str
    kind: AliasKind
    primary: str | None
    replicas: tuple[str, ...]
    state: AliasState
    servable: bool
    targets_total: int
    targets_usable: int
    max_replica_lag: float | None
    lag: float | None
    reasons: tuple[str, ...]
    max_replica_lag_bytes: int | None = None


@dataclass(frozen=True)
class Report:
    """Everything ``dbhealth`` and the readiness view show."""

    status: Status
    aliases: tuple[AliasReport, ...]
    targets: tuple[TargetRow, ...]
    generated_at: float
    duration: float
    timeout: float

    @property
    def exit_code(self) -> int:
        """Return 0 healthy, 1 degraded, 2 unavailable."""
        return EXIT_CODES[self.status]

    @property
    def servable(self) -> bool:
        """Return whether every alias can be served (a degraded report still can)."""
        return self.status != "unavailable"

    def as_dict(self, *, show_hosts: bool = True) -> dict[str, Any]:
        """Return the JSON-ready form (schema :data:`SCHEMA_VERSION`)."""
        return {
            "schema": SCHEMA_VERSION,
            "status": self.status,
            "exit_code": self.exit_code,
            "generated_at": _iso(self.generated_at),
            "duration": round(self.duration, 4),
            "timeout": self.timeout,
            "aliases": [_alias_dict(verdict) for verdict in self.aliases],
            "targets": [_target_dict(row, show_hosts) for row in self.targets],
        }


def _iso(wall: float | None) -> str | None:
    if wall is None:
        return None
    return dt.datetime.fromtimestamp(wall, tz=dt.timezone.utc).isoformat(timespec="milliseconds")


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _alias_dict(verdict: AliasReport) -> dict[str, Any]:
    return {
        "alias": verdict.alias,
        "kind": verdict.kind,
        "primary": verdict.primary,
        "replicas": list(verdict.replicas),
        "status": verdict.state,
        "servable": verdict.servable,
        "targets_total": verdict.targets_total,
        "targets_usable": verdict.targets_usable,
        "max_replica_lag": verdict.max_replica_lag,
        "max_replica_lag_bytes": verdict.max_replica_lag_bytes,
        "lag": _round(verdict.lag, 3),
        "reasons": list(verdict.reasons),
    }


def _target_dict(row: TargetRow, show_hosts: bool) -> dict[str, Any]:
    record = row.health
    now = time.monotonic()
    next_in = None if record.next_probe_at is None else max(0.0, record.next_probe_at - now)
    category = row.probe.category.value if row.probe.category is not None else None
    # Driver messages quote host names and addresses; without SHOW_HOSTS only
    # the category is shown.
    error = row.error if show_hosts else category
    last_error = record.last_error if show_hosts else record.last_category
    if last_error is not None and show_hosts:
        last_error = mask(last_error)
    return {
        "id": row.id,
        "alias": row.target.alias,
        "index": row.target.index,
        "peer": row.is_peer,
        "priority": row.target.priority,
        "label": row.target.label if show_hosts else None,
        "host": row.target.host if show_hosts else None,
        "port": row.target.port if show_hosts else None,
        "name": row.target.name if show_hosts else None,
        "expected_role": row.expected_role,
        "usable": row.usable,
        "lagging": row.lagging,
        "probe": {
            "ok": row.probe.ok,
            "latency": _round(row.probe.latency),
            "role": row.probe.role,
            "lag": _round(row.probe.lag, 3),
            "category": category,
            "error": error,
            "note": row.note if show_hosts else (row.note and row.note.split(":", 1)[0]),
        },
        "registry": {
            "state": str(getattr(record.state, "value", record.state)),
            "failures": record.failures,
            "since": _iso(record.since),
            "latency": _round(record.latency),
            "role": record.role,
            "lag": _round(record.lag, 3),
            "lag_measured_at": _iso(record.lag_measured_at),
            "next_probe_in": _round(next_in, 3),
            "last_category": record.last_category,
            "last_error": last_error,
        },
    }


class UnknownAlias(LookupError):
    """An alias asked for is not in DATABASES."""


def all_aliases() -> list[str]:
    """Return every alias of DATABASES, in settings order."""
    return list(connections.settings)


def build_report(
    aliases: Sequence[str] | None = None,
    *,
    timeout: float | None = None,
    record: bool = True,
    max_age: float | None = None,
) -> Report:
    """Probe every target of ``aliases`` (default: all) in parallel and judge them.

    ``max_age``: reuse a probe result up to this old, probing stale targets
    in the background, once per target however many callers ask
    (snapshot.py); ``None`` probes every target live now (``dbhealth``).
    """
    started = time.monotonic()
    generated_at = time.time()
    settings = get_settings()
    known = all_aliases()
    chosen = list(dict.fromkeys(aliases)) if aliases else known
    unknown = [alias for alias in chosen if alias not in known]
    if unknown:
        raise UnknownAlias(", ".join(unknown))
    if timeout is None:
        timeout = settings.health.probe_timeout

    topology = topology_of(settings)
    targets = [target for alias in chosen for target in targets_for(alias)]
    # A byte lag is measured against the primary's position: probe it too.
    targets += [t for t in position_targets(chosen, topology) if t not in targets]
    results = _probe(targets, timeout=timeout, record=record, max_age=max_age)
    by_target = {result.target: result for result in results}
    rows: list[TargetRow] = []
    alias_reports: list[AliasReport] = []
    for alias in chosen:
        alias_rows, alias_report = _judge_alias(alias, topology, by_target)
        rows.extend(alias_rows)
        alias_reports.append(alias_report)

    status: Status = "healthy"
    if any(verdict.state == "unavailable" for verdict in alias_reports):
        status = "unavailable"
    elif any(verdict.state != "ok" for verdict in alias_reports):
        status = "degraded"
    return Report(
        status=status,
        aliases=tuple(alias_reports),
        targets=tuple(rows),
        generated_at=generated_at,
        duration=time.monotonic() - started,
        timeout=timeout,
    )


def _probe(
    targets: list[Target], *, timeout: float, record: bool, max_age: float | None
) -> Sequence[ProbeResult]:
    """Return a probe result per target: live, or reused up to ``max_age`` old."""
    if max_age is not None:
        from resilient_db.health.snapshot import latest_results

        return latest_results(targets, timeout=timeout, max_age=max_age)
    return probe_many(targets, timeout=timeout, record=record) if targets else []


def _judge_alias(
    alias: str, topology: Topology, by_target: Mapping[Target, ProbeResult]
) -> tuple[list[TargetRow], AliasReport]:
    """Return the rows of ``alias``'s targets and the verdict for the alias."""
    kind = topology.kind(alias)
    primary = topology.primary_of(alias)
    expected = topology.expected_role(alias)
    limits = probed_limits(topology, primary, by_target)
    secrets = secrets_of(connections.settings[alias])
    registry = get_registry()
    rows: list[TargetRow] = []
    for target in targets_for(alias):
        result = by_target[target]
        target_secrets = secrets | secrets_of(target.overrides)
        usable = result.ok and not (expected == "primary" and result.role == "replica")
        # Routers skip a replica whose lag is above the limit or unknown
        # while a limit is set; so does this verdict (health/freshness.py).
        lagging = (
            kind == "replica" and usable
            and measurement_verdict(result.lag, result.lsn, limits) is not None
        )
        masked = mask(result.error, target_secrets) if result.error else None
        rows.append(
            TargetRow(
                target=target,
                kind=kind,
                expected_role=expected,
                probe=result,
                health=registry.health(target),
                usable=usable,
                lagging=lagging,
                error=None if result.ok else masked,
                note=masked if result.ok else None,
            )
        )
    replicas = topology.settings.alias(alias).replicas
    return rows, _alias_verdict(alias, kind, primary, replicas, limits, rows)


def _alias_verdict(
    alias: str,
    kind: AliasKind,
    primary: str | None,
    replicas: tuple[str, ...],
    limits: LagLimits,
    rows: Sequence[TargetRow],
) -> AliasReport:
    usable = [row for row in rows if row.usable]
    fresh = [row for row in usable if not row.lagging]
    down = [row for row in rows if not row.probe.ok]
    read_only = [row for row in rows if row.probe.ok and not row.usable]
    lags = [row.probe.lag for row in usable if row.probe.lag is not None]
    lag = min(lags) if lags else None
    reasons: list[str] = []
    state: AliasState = "ok"
    if down:
        reasons.append(f"{len(down)} of {len(rows)} targets down")
    if read_only:
        reasons.append(f"{len(read_only)} of {len(rows)} targets read-only")
    if kind == "replica":
        servable = bool(fresh)
        if not usable:
            state = "degraded"
            reasons.append(f"no usable target; reads fall back to {primary}")
        elif not fresh:
            state = "degraded"
            reasons.append(f"{_lag_reason(lag, usable, limits)}; reads fall back to {primary}")
        elif down or read_only:
            state = "degraded"
    else:
        servable = bool(usable)
        if not usable:
            state = "unavailable"
            reasons.append("no writable primary" if read_only else "no usable target")
        elif down or read_only:
            state = "degraded"
    return AliasReport(
        alias=alias,
        kind=kind,
        primary=primary,
        replicas=replicas,
        state=state,
        servable=servable,
        targets_total=len(rows),
        targets_usable=len(usable),
        max_replica_lag=limits.seconds,
        lag=lag,
        reasons=tuple(reasons),
        max_replica_lag_bytes=limits.bytes,
    )


def _lag_reason(lag: float | None, usable: Sequence[TargetRow], limits: LagLimits) -> str:
    """Say why no usable target of a replica alias is fresh (the least-behind one's figures)."""
    if lag is not None and limits.seconds is not None and lag > limits.seconds:
        return f"replication lag {lag:.1f} s above MAX_REPLICA_LAG {limits.seconds:g} s"
    behind = [lag_bytes(limits.primary_lsn, row.probe.lsn) for row in usable]
    known = [b for b in behind if b is not None]
    if limits.bytes is not None and known and min(known) > limits.bytes:
        return (f"replication lag {min(known)} bytes above MAX_REPLICA_LAG_BYTES "
                f"{limits.bytes} bytes")
    return "replication lag unknown"
