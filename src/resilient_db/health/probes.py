"""Probes: ping, role and replication lag of one target, with a hard timeout.

A probe opens its OWN short-lived driver connection (never a Django
connection), runs read-only statements in a read-only transaction, and closes
it. It runs in a worker thread; the caller waits at most ``timeout`` seconds.
A server that accepts TCP but never answers (SIGSTOP, a black-holed network)
cannot hold the caller longer: on time-out the probe's socket is shut down
under the driver, which then fails at once and the worker closes the
connection. Many targets are probed in parallel (:func:`probe_many`): the
total time is that of the slowest, not the sum.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from resilient_db.conf import get_settings
from resilient_db.health.errors import Category, classify
from resilient_db.health.probe_connection import Measurement, ProbeConnection
from resilient_db.health.probes_mysql import probe_mysql
from resilient_db.health.probes_pg import probe_postgresql
from resilient_db.health.redact import mask, secrets_of
from resilient_db.health.targets import Target

__all__ = [
    "Measurement",
    "ProbeConnection",
    "ProbeResult",
    "ProbeTimeout",
    "probe",
    "probe_many",
    "vendor_of",
]

logger = logging.getLogger("resilient_db.health")


@dataclass(frozen=True)
class ProbeResult:
    """What one probe found out (no secrets in ``error``)."""

    target: Target
    ok: bool
    latency: float | None = None  # connect + first answer, seconds
    role: str | None = None  # "primary" | "replica"
    lag: float | None = None  # seconds; 0 on a primary or a caught-up replica
    lsn: int | None = None
    category: Category | None = None
    error: str | None = None


class ProbeTimeout(TimeoutError):
    """The target did not answer within the probe's hard timeout."""


Runner = Callable[[Mapping[str, Any], float, bool, ProbeConnection], Measurement]


def vendor_of(alias: str, settings_dict: Mapping[str, Any] | None = None) -> str:
    """Return "postgresql", "mysql", "sqlite" or the backend's own vendor for ``alias``."""
    if settings_dict is None:
        from django.db import connections

        settings_dict = connections[alias].settings_dict
    engine = str(settings_dict.get("ENGINE") or "")
    if "postgis" in engine or "postgres" in engine or "psycopg" in engine:
        return "postgresql"
    if "mysql" in engine or "maria" in engine:
        return "mysql"
    if "sqlite" in engine or "spatialite" in engine:
        return "sqlite"
    from django.db import connections

    return str(connections[alias].vendor)


def _runner(vendor: str) -> Runner | None:
    if vendor == "postgresql":
        return probe_postgresql
    if vendor == "mysql":
        return probe_mysql
    if vendor == "sqlite":
        return _probe_sqlite
    return None


def _probe_sqlite(
    params: Mapping[str, Any], timeout: float, lag: bool, connection: ProbeConnection
) -> Measurement:
    # A file on this machine: nothing can fail over; report it alive.
    return Measurement(latency=0.0, role="primary", lag=0.0)


class _Job:
    """One probe running in its worker thread."""

    def __init__(
        self,
        target: Target,
        runner: Runner,
        params: Mapping[str, Any],
        timeout: float,
        measure_lag: bool,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.connection = ProbeConnection()
        self.done = threading.Event()
        self.measurement: Measurement | None = None
        self.error: BaseException | None = None
        self.secrets = secrets_of(params)
        self.thread = threading.Thread(
            target=self._run,
            args=(runner, params, measure_lag),
            name=f"resilient_db probe {target.label}",
            daemon=True,
        )

    def _run(self, runner: Runner, params: Mapping[str, Any], measure_lag: bool) -> None:
        try:
            self.measurement = runner(params, self.timeout, measure_lag, self.connection)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller, never raised in a thread
            self.error = exc
        finally:
            self.connection.close()
            self.done.set()

    def start(self) -> _Job:
        self.thread.start()
        return self

    def result(self, deadline: float) -> tuple[ProbeResult, BaseException | None]:
        """Wait until ``deadline`` (monotonic); return the result and the raw error."""
        finished = self.done.wait(max(0.0, deadline - time.monotonic()))
        if not finished:
            self.connection.cancel()
            timed_out = ProbeTimeout(f"no answer within {self.timeout:g}s")
            return (
                ProbeResult(
                    self.target, False, category=Category.CANNOT_CONNECT, error=str(timed_out)
                ),
                timed_out,
            )
        if self.error is not None:
            exc = self.error
            category = classify(exc, connecting=True)
            if category is Category.CONNECTION_LOST:
                category = Category.CANNOT_CONNECT
            text = mask(" ".join(f"{type(exc).__name__}: {exc}".split()), self.secrets)
            return ProbeResult(self.target, False, category=category, error=text[:500]), exc
        m = self.measurement
        assert m is not None
        return (
            ProbeResult(
                self.target,
                True,
                latency=m.latency,
                role=m.role,
                lag=m.lag,
                lsn=m.lsn,
                error=m.note,
            ),
            None,
        )


def _prepare(
    target: Target,
    vendor: str | None,
    timeout: float | None,
    base_settings: Mapping[str, Any] | None,
    measure_lag: bool,
) -> _Job | ProbeResult:
    if base_settings is None:
        base_settings = _base_settings(target.alias)
    params = target.settings_dict(base_settings)
    vendor = vendor or vendor_of(target.alias, params)
    runner = _runner(vendor)
    if runner is None:
        return ProbeResult(target, False, error=f"no probe for the {vendor!r} backend")
    if timeout is None:
        timeout = get_settings().health.probe_timeout
    return _Job(target, runner, params, timeout, measure_lag)


def _base_settings(alias: str) -> Mapping[str, Any]:
    from django.db import connections
    from django.utils.connection import ConnectionDoesNotExist

    try:
        return connections[alias].settings_dict
    except ConnectionDoesNotExist:
        # Django's connections are per thread: an alias added at run time in
        # another thread (the monitor probes from its own) is only in settings.
        from django.conf import settings

        found = settings.DATABASES.get(alias)
        if not isinstance(found, Mapping):
            raise
        return found


def _record(result: ProbeResult, exc: BaseException | None) -> None:
    from resilient_db.health.registry import get_registry

    registry = get_registry()
    target = result.target
    if result.ok:
        registry.record_success(target, result.latency)
        if result.role is not None:
            registry.record_role(target, result.role)
        if result.lag is not None or result.lsn is not None or result.role == "replica":
            registry.record_lag(target, result.lag, lsn=result.lsn)
    elif result.category is not None:
        registry.record_failure(target, exc, result.category)


def probe(
    target: Target,
    *,
    vendor: str | None = None,
    timeout: float | None = None,
    base_settings: Mapping[str, Any] | None = None,
    measure_lag: bool = True,
    record: bool = True,
) -> ProbeResult:
    """Probe ``target`` (ping, role, lag) within ``timeout`` seconds; report it if ``record``."""
    return probe_many(
        [target],
        timeout=timeout,
        record=record,
        vendor=vendor,
        base_settings=base_settings,
        measure_lag=measure_lag,
    )[0]


def probe_many(
    targets: Sequence[Target],
    *,
    timeout: float | None = None,
    record: bool = True,
    vendor: str | None = None,
    base_settings: Mapping[str, Any] | None = None,
    measure_lag: bool = True,
) -> list[ProbeResult]:
    """Probe every target in parallel; return the results in the same order."""
    prepared = [_prepare(t, vendor, timeout, base_settings, measure_lag) for t in targets]
    start = time.monotonic()
    for item in prepared:
        if isinstance(item, _Job):
            item.start()
    out: list[ProbeResult] = []
    for item in prepared:
        if isinstance(item, ProbeResult):
            out.append(item)
            continue
        result, exc = item.result(start + item.timeout)
        if not result.ok:
            logger.info(
                "probe of %s (alias %s) failed: %s", result.target.label, result.target.alias,
                result.error,
            )
        if record:
            _record(result, exc)
        out.append(result)
    return out
