"""Build the health report shared by ``dbhealth``, the readiness view and the health-check class.

One fresh, parallel probe of every target of the chosen aliases, combined with
what the registry knows (failures, back-off, since when), and judged by the
status rules:

- an alias can be served when at least one of its targets is usable: it
  answers, and, for an alias that must take writes (``ROLE`` ``"primary"`` or
  one that lists ``REPLICAS``), it is writable;
- a replica alias that is down or lags beyond ``MAX_REPLICA_LAG`` only
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
from resilient_db.health.probes import ProbeResult, probe_many
from resilient_db.health.redact import mask, secrets_of
from resilient_db.health.registry import TargetHealth, get_registry
from resilient_db.health.targets import Target, targets_for

SCHEMA_VERSION = 1

Status = Literal["healthy", "degraded", "unavailable"]
AliasState = Literal["ok", "degraded", "unavailable"]
AliasKind = Literal["primary", "replica", "standalone"]

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
            "aliases": [_alias_dict(a) for a in self.aliases],
            "targets": [_target_dict(t, show_hosts) for t in self.targets],
        }


def _iso(wall: float | None) -> str | None:
    if wall is None:
        return None
    return dt.datetime.fromtimestamp(wall, tz=dt.timezone.utc).isoformat(timespec="milliseconds")


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _alias_dict(a: AliasReport) -> dict[str, Any]:
    return {
        "alias": a.alias,
        "kind": a.kind,
        "primary": a.primary,
        "replicas": list(a.replicas),
        "status": a.state,
        "servable": a.servable,
        "targets_total": a.targets_total,
        "targets_usable": a.targets_usable,
        "max_replica_lag": a.max_replica_lag,
        "lag": _round(a.lag, 3),
        "reasons": list(a.reasons),
    }


def _target_dict(t: TargetRow, show_hosts: bool) -> dict[str, Any]:
    h = t.health
    now = time.monotonic()
    next_in = None if h.next_probe_at is None else max(0.0, h.next_probe_at - now)
    category = t.probe.category.value if t.probe.category is not None else None
    # Driver messages quote host names and addresses; without SHOW_HOSTS only
    # the category is shown.
    error = t.error if show_hosts else category
    last_error = h.last_error if show_hosts else h.last_category
    if last_error is not None and show_hosts:
        last_error = mask(last_error)
    return {
        "id": t.id,
        "alias": t.target.alias,
        "index": t.target.index,
        "peer": t.is_peer,
        "priority": t.target.priority,
        "label": t.target.label if show_hosts else None,
        "host": t.target.host if show_hosts else None,
        "port": t.target.port if show_hosts else None,
        "name": t.target.name if show_hosts else None,
        "expected_role": t.expected_role,
        "usable": t.usable,
        "lagging": t.lagging,
        "probe": {
            "ok": t.probe.ok,
            "latency": _round(t.probe.latency),
            "role": t.probe.role,
            "lag": _round(t.probe.lag, 3),
            "category": category,
            "error": error,
            "note": t.note if show_hosts else (t.note and t.note.split(":", 1)[0]),
        },
        "registry": {
            "state": str(getattr(h.state, "value", h.state)),
            "failures": h.failures,
            "since": _iso(h.since),
            "latency": _round(h.latency),
            "role": h.role,
            "lag": _round(h.lag, 3),
            "lag_measured_at": _iso(h.lag_measured_at),
            "next_probe_in": _round(next_in, 3),
            "last_category": h.last_category,
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
    cfg = get_settings()
    known = all_aliases()
    chosen = list(dict.fromkeys(aliases)) if aliases else known
    unknown = [a for a in chosen if a not in known]
    if unknown:
        raise UnknownAlias(", ".join(unknown))
    if timeout is None:
        timeout = cfg.health.probe_timeout

    targets = [t for alias in chosen for t in targets_for(alias)]
    if max_age is not None:
        from resilient_db.health.snapshot import latest_results

        results = latest_results(targets, timeout=timeout, max_age=max_age)
    else:
        results = probe_many(targets, timeout=timeout, record=record) if targets else []
    by_target = {r.target: r for r in results}
    registry = get_registry()
    replica_aliases = cfg.replica_aliases()

    rows: list[TargetRow] = []
    alias_reports: list[AliasReport] = []
    for alias in chosen:
        acfg = cfg.alias(alias)
        primary = cfg.primary_of(alias) if alias in replica_aliases else None
        kind: AliasKind = (
            "replica" if primary is not None else "primary" if acfg.replicas else "standalone"
        )
        expected = acfg.role or ("primary" if acfg.replicas else None)
        if kind == "replica" and expected is None:
            expected = "replica"
        max_lag = cfg.alias(primary).max_replica_lag if primary is not None else None
        secrets = secrets_of(connections.settings[alias])
        alias_rows: list[TargetRow] = []
        for target in targets_for(alias):
            result = by_target[target]
            secrets_t = secrets | secrets_of(target.overrides)
            writable_needed = expected == "primary"
            usable = result.ok and not (writable_needed and result.role == "replica")
            # Routers skip a replica whose lag is above the limit or unknown
            # while a limit is set; so does this verdict.
            lagging = (
                kind == "replica"
                and usable
                and max_lag is not None
                and (result.lag is None or result.lag > max_lag)
            )
            row = TargetRow(
                target=target,
                kind=kind,
                expected_role=expected,
                probe=result,
                health=registry.health(target),
                usable=usable,
                lagging=lagging,
                error=mask(result.error, secrets_t) if result.error and not result.ok else None,
                note=mask(result.error, secrets_t) if result.error and result.ok else None,
            )
            alias_rows.append(row)
        rows.extend(alias_rows)
        alias_reports.append(_judge(alias, kind, primary, acfg.replicas, max_lag, alias_rows))

    status: Status = "healthy"
    if any(a.state == "unavailable" for a in alias_reports):
        status = "unavailable"
    elif any(a.state != "ok" for a in alias_reports):
        status = "degraded"
    return Report(
        status=status,
        aliases=tuple(alias_reports),
        targets=tuple(rows),
        generated_at=generated_at,
        duration=time.monotonic() - started,
        timeout=timeout,
    )


def _judge(
    alias: str,
    kind: AliasKind,
    primary: str | None,
    replicas: tuple[str, ...],
    max_lag: float | None,
    rows: Sequence[TargetRow],
) -> AliasReport:
    usable = [r for r in rows if r.usable]
    fresh = [r for r in usable if not r.lagging]
    down = [r for r in rows if not r.probe.ok]
    read_only = [r for r in rows if r.probe.ok and not r.usable]
    lags = [r.probe.lag for r in usable if r.probe.lag is not None]
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
            reasons.append(
                f"replication lag {lag:.1f} s above MAX_REPLICA_LAG {max_lag:g} s; "
                f"reads fall back to {primary}"
                if lag is not None and max_lag is not None
                else f"replication lag unknown; reads fall back to {primary}"
            )
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
        max_replica_lag=max_lag,
        lag=lag,
        reasons=tuple(reasons),
    )
