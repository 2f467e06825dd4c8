"""Render a health report in the OpenMetrics text format (no dependency needed)."""

from __future__ import annotations

from resilient_db.health.report import Report

CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
STATUS_VALUES = {"healthy": 0, "degraded": 1, "unavailable": 2}
ALIAS_VALUES = {"ok": 0, "degraded": 1, "unavailable": 2}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def render_openmetrics(report: Report, *, show_hosts: bool = False) -> str:
    """Return the report as OpenMetrics gauges, ending with ``# EOF``."""
    lines = [
        "# TYPE resilient_db_status gauge",
        "# HELP resilient_db_status Overall database status: 0 healthy, 1 degraded, 2 unavailable.",
        f"resilient_db_status {STATUS_VALUES[report.status]}",
        "# TYPE resilient_db_alias_status gauge",
        "# HELP resilient_db_alias_status Per alias: 0 ok, 1 degraded, 2 unavailable.",
    ]
    for a in report.aliases:
        lines.append(
            f"resilient_db_alias_status{_labels(alias=a.alias, kind=a.kind)} {ALIAS_VALUES[a.state]}"
        )
    up: list[str] = []
    latency: list[str] = []
    lag: list[str] = []
    for t in report.targets:
        labels = {"alias": t.target.alias, "target": t.id}
        if show_hosts:
            labels["host"] = t.target.label
        lab = _labels(**labels)
        up.append(f"resilient_db_target_up{lab} {1 if t.usable else 0}")
        if t.probe.latency is not None:
            latency.append(f"resilient_db_probe_latency_seconds{lab} {t.probe.latency:.6f}")
        if t.probe.lag is not None:
            lag.append(f"resilient_db_replication_lag_seconds{lab} {t.probe.lag:.3f}")
    lines += [
        "# TYPE resilient_db_target_up gauge",
        "# HELP resilient_db_target_up 1 when the target answered the probe and is usable.",
        *up,
        "# TYPE resilient_db_probe_latency_seconds gauge",
        "# UNIT resilient_db_probe_latency_seconds seconds",
        "# HELP resilient_db_probe_latency_seconds Round trip of the last probe.",
        *latency,
        "# TYPE resilient_db_replication_lag_seconds gauge",
        "# UNIT resilient_db_replication_lag_seconds seconds",
        "# HELP resilient_db_replication_lag_seconds Replication lag measured by the probe.",
        *lag,
        "# EOF",
    ]
    return "\n".join(lines) + "\n"
