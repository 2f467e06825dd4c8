"""Optional Prometheus metrics, fed by the signals in :mod:`resilient_db.signals`.

Needs ``prometheus_client`` (``pip install django-resilient-db[prometheus]``).
Nothing happens at import: call :func:`install` once (e.g. in your
``AppConfig.ready``), then expose ``prometheus_client``'s registry as usual
(``django-prometheus``, ``make_wsgi_app()``, or the multiprocess collector).

Counters follow the signals; the per-target state and replication lag are
gauges read from the health registry at scrape time, so they are never stale.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from resilient_db import signals

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "resilient_db.metrics needs prometheus_client: "
        "pip install 'django-resilient-db[prometheus]'"
    ) from exc

PREFIX = "resilient_db"
STATE_VALUES = {"up": 1.0, "probing": 0.5, "down": 0.0}


@dataclass(frozen=True)
class Metrics:
    """The counters, so tests and users can read them."""

    reconnects: Counter
    retries: Counter
    failovers: Counter
    target_down: Counter
    target_up: Counter
    pins: Counter
    replica_skipped: Counter
    primary_reads: Counter


class RegistryCollector(Collector):
    """Per-target state and replication lag, read from the health registry at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the state and lag gauges."""
        from resilient_db.health.registry import get_registry

        state = GaugeMetricFamily(
            f"{PREFIX}_target_state",
            "Target state in the health registry: 1 up, 0.5 probing, 0 down.",
            labels=["alias", "target"],
        )
        lag = GaugeMetricFamily(
            f"{PREFIX}_replication_lag_seconds",
            "Last measured replication lag of a replica target.",
            labels=["alias", "target"],
            unit="seconds",
        )
        for h in get_registry().all():
            word = str(getattr(h.state, "value", h.state))
            state.add_metric([h.alias, h.label], STATE_VALUES.get(word, 0.0))
            if h.lag is not None:
                lag.add_metric([h.alias, h.label], h.lag)
        yield state
        yield lag


# Keyed by the registry object itself (not its id, which may be reused).
_installed: dict[CollectorRegistry, Metrics] = {}


def install(registry: CollectorRegistry | None = None) -> Metrics:
    """Create the metrics in ``registry`` (default: the global one) and connect them (idempotent)."""
    reg = REGISTRY if registry is None else registry
    existing = _installed.get(reg)
    if existing is not None:
        return existing
    m = Metrics(
        reconnects=Counter(
            f"{PREFIX}_reconnects", "Connections replaced after being found dead.",
            ["alias", "reason"], registry=reg,
        ),
        retries=Counter(
            f"{PREFIX}_query_retries",
            "Statements or transactions run again, by category and outcome.",
            ["alias", "category", "outcome"], registry=reg,
        ),
        failovers=Counter(
            f"{PREFIX}_failovers", "Connections that went to another target after a failure.",
            ["alias", "category"], registry=reg,
        ),
        target_down=Counter(
            f"{PREFIX}_target_down", "Targets marked down, by failure category.",
            ["alias", "category"], registry=reg,
        ),
        target_up=Counter(
            f"{PREFIX}_target_up", "Targets back up after being down.", ["alias"], registry=reg,
        ),
        pins=Counter(
            f"{PREFIX}_pins", "Units of work pinned to the primary, by reason.",
            ["alias", "reason"], registry=reg,
        ),
        replica_skipped=Counter(
            f"{PREFIX}_replica_skipped", "Replica choices skipped (down, lag, unknown lag).",
            ["alias", "reason"], registry=reg,
        ),
        primary_reads=Counter(
            f"{PREFIX}_primary_fallback_reads",
            "Reads sent to the primary because no replica was usable.",
            ["alias", "reason"], registry=reg,
        ),
    )
    reg.register(RegistryCollector())
    _connect(m, id(reg))
    _installed[reg] = m
    return m


def _label(value: Any) -> str:
    return "" if value is None else str(value)


def _connect(m: Metrics, uid: int) -> None:
    # Receivers are closures over this Metrics; keep them alive with strong refs.
    def on_reconnected(sender: Any, alias: Any = None, reason: Any = None, **kw: Any) -> None:
        m.reconnects.labels(_label(alias), _label(reason)).inc()

    def on_retried(
        sender: Any, alias: Any = None, category: Any = None, outcome: Any = None, **kw: Any
    ) -> None:
        m.retries.labels(_label(alias), _label(category), _label(outcome)).inc()

    def on_failover(sender: Any, alias: Any = None, category: Any = None, **kw: Any) -> None:
        m.failovers.labels(_label(alias), _label(category)).inc()

    def on_down(sender: Any, alias: Any = None, category: Any = None, **kw: Any) -> None:
        m.target_down.labels(_label(alias), _label(category)).inc()

    def on_up(sender: Any, alias: Any = None, **kw: Any) -> None:
        m.target_up.labels(_label(alias)).inc()

    def on_pinned(sender: Any, alias: Any = None, reason: Any = None, **kw: Any) -> None:
        m.pins.labels(_label(alias), _label(reason)).inc()

    def on_skipped(sender: Any, alias: Any = None, reason: Any = None, **kw: Any) -> None:
        m.replica_skipped.labels(_label(alias), _label(reason)).inc()

    def on_fallback(sender: Any, alias: Any = None, reason: Any = None, **kw: Any) -> None:
        m.primary_reads.labels(_label(alias), _label(reason)).inc()

    for signal, receiver in (
        (signals.reconnected, on_reconnected),
        (signals.query_retried, on_retried),
        (signals.failover, on_failover),
        (signals.target_down, on_down),
        (signals.target_up, on_up),
        (signals.pinned, on_pinned),
        (signals.replica_skipped, on_skipped),
        (signals.primary_fallback, on_fallback),
    ):
        signal.connect(receiver, weak=False, dispatch_uid=f"resilient_db.metrics.{uid}.{receiver.__name__}")
