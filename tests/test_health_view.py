"""Readiness endpoint, OpenMetrics, the django-health-check class and Prometheus metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import Client, override_settings
from django.urls import reverse

from resilient_db import signals
from resilient_db.health.registry import get_registry
from resilient_db_testbed.bed_config import BedConfig

pytestmark = pytest.mark.bed

URL = "/health/db/"


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    from resilient_db.health import snapshot

    get_registry().reset()
    snapshot.reset()
    yield
    get_registry().reset()
    snapshot.reset()


def hidden(bed: BedConfig) -> list[str]:
    return [bed.host, str(bed.pg_primary_port), str(bed.pgbouncer_b_port), bed.pg_password,
            bed.maria_password]


def test_url_names() -> None:
    assert reverse("resilient_db_health:health") == URL
    assert reverse("resilient_db_health:metrics") == URL + "metrics"


def test_servable_is_200_without_hosts(bed: BedConfig) -> None:
    response = Client().get(URL)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    data = response.json()
    assert data["schema"] == 1
    assert data["status"] in ("healthy", "degraded")
    body = response.content.decode()
    for secret in hidden(bed):
        assert secret not in body
    assert all(t["host"] is None and t["label"] is None for t in data["targets"])
    assert {t["id"] for t in data["targets"]} >= {"default#0", "bouncers#1"}


@override_settings(RESILIENT_DB={"HEALTH": {"SHOW_HOSTS": True}})
def test_show_hosts(bed: BedConfig) -> None:
    response = Client().get(URL)
    body = response.content.decode()
    assert f"{bed.host}:{bed.pg_primary_port}" in body
    assert bed.pg_password not in body and bed.maria_password not in body


@pytest.mark.slow
def test_unservable_is_503(bed: BedConfig, kill_peer: Any) -> None:
    kill_peer("pgbouncer_a")
    kill_peer("pgbouncer_b")
    response = Client().get(URL)
    assert response.status_code == 503
    data = response.json()
    bouncers = next(a for a in data["aliases"] if a["alias"] == "bouncers")
    assert bouncers["status"] == "unavailable" and not bouncers["servable"]
    target = next(t for t in data["targets"] if t["id"] == "bouncers#0")
    # Without SHOW_HOSTS the driver message (which quotes the address) is replaced.
    assert target["probe"]["error"] == "cannot_connect"
    for secret in hidden(bed):
        assert secret not in response.content.decode()
    metrics = Client().get(URL + "?format=openmetrics")
    assert metrics.status_code == 200
    assert "resilient_db_status 2\n" in metrics.content.decode()


def test_openmetrics(bed: BedConfig) -> None:
    for url in (URL + "?format=openmetrics", URL + "metrics"):
        response = Client().get(url)
        assert response.status_code == 200
        assert response["Content-Type"].startswith("application/openmetrics-text")
        text = response.content.decode()
        assert text.endswith("# EOF\n")
        assert 'resilient_db_target_up{alias="default",target="default#0"} 1' in text
        assert 'resilient_db_alias_status{alias="default",kind="primary"} 0' in text
        assert bed.host not in text


def test_openmetrics_parses(bed: BedConfig) -> None:
    parser = pytest.importorskip("prometheus_client.openmetrics.parser")
    text = Client().get(URL + "metrics").content.decode()
    names = {f.name for f in parser.text_string_to_metric_families(text)}
    assert {"resilient_db_status", "resilient_db_target_up",
            "resilient_db_probe_latency_seconds"} <= names


def test_only_safe_methods() -> None:
    assert Client().post(URL).status_code == 405
    assert Client().head(URL).status_code in (200, 503)


def test_health_check_class(bed: BedConfig) -> None:
    pytest.importorskip("health_check")
    from resilient_db.health.contrib_health_check import ResilientDatabases

    check = ResilientDatabases(alias="default")
    assert check.timeout.total_seconds() == 2.0
    check.run()  # healthy: no exception
    result = async_to_sync(check.get_result)()
    assert result.error is None


@pytest.mark.slow
def test_health_check_class_unavailable(bed: BedConfig, kill_peer: Any) -> None:
    pytest.importorskip("health_check")
    from health_check.exceptions import ServiceUnavailable, ServiceWarning

    from resilient_db.health.contrib_health_check import ResilientDatabases

    kill_peer("pgbouncer_a")
    with pytest.raises(ServiceWarning, match="bouncers: degraded"):
        ResilientDatabases(alias="bouncers").run()
    kill_peer("pgbouncer_b")
    with pytest.raises(ServiceUnavailable, match="bouncers: unavailable"):
        ResilientDatabases(alias="bouncers").run()
    assert bed.host not in repr(ResilientDatabases(alias="bouncers"))


def test_prometheus_metrics_follow_signals(bed: BedConfig) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from resilient_db import metrics
    from resilient_db.health.report import build_report

    registry = prometheus_client.CollectorRegistry()
    m = metrics.install(registry)
    assert metrics.install(registry) is m  # idempotent
    signals.reconnected.send(sender=object, alias="default", target="x", reason="dead_connection")
    signals.query_retried.send(sender=object, alias="default", target="x", attempt=1,
                               category="connection_lost", error="OperationalError",
                               outcome="refused")
    signals.failover.send(sender=object, alias="bouncers", from_target="a", to_target="b",
                          category="cannot_connect")
    signals.pinned.send(sender=object, alias="default", reason="write")
    signals.primary_fallback.send(sender=object, alias="default", reason="lag")
    signals.replica_skipped.send(sender=object, alias="replica", primary="default",
                                 reason="lag", lag=9.0)
    get = registry.get_sample_value
    assert get("resilient_db_reconnects_total",
               {"alias": "default", "reason": "dead_connection"}) == 1
    assert get("resilient_db_query_retries_total",
               {"alias": "default", "category": "connection_lost", "outcome": "refused"}) == 1
    assert get("resilient_db_failovers_total",
               {"alias": "bouncers", "category": "cannot_connect"}) == 1
    assert get("resilient_db_pins_total", {"alias": "default", "reason": "write"}) == 1
    assert get("resilient_db_primary_fallback_reads_total",
               {"alias": "default", "reason": "lag"}) == 1
    assert get("resilient_db_replica_skipped_total", {"alias": "replica", "reason": "lag"}) == 1
    # Target state and lag are read from the registry at scrape time.
    build_report(["replica"])
    text = prometheus_client.generate_latest(registry).decode()
    assert 'resilient_db_target_state{alias="replica"' in text
    assert "resilient_db_replication_lag_seconds{" in text
    json.dumps(text)


@pytest.mark.slow
@pytest.mark.parametrize("frozen", ["pgbouncer_a", "maria_peer_a"])
def test_hammered_endpoint_with_a_frozen_target_answers_fast_and_probes_once_per_interval(
    bed: BedConfig, freeze_peer: Any, frozen: str
) -> None:
    import threading
    import time

    from resilient_db.health import snapshot

    freeze_peer(frozen)
    # The first call in a process waits for its first probes (at most the
    # probe timeout); every later one answers from them.
    assert Client().get(URL).status_code == 200
    probes_before = snapshot.started
    durations: list[float] = []
    statuses: list[int] = []
    end = time.monotonic() + 10.0

    def hammer() -> None:
        client = Client()
        while time.monotonic() < end:
            began = time.monotonic()
            statuses.append(client.get(URL).status_code)
            durations.append(time.monotonic() - began)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    targets = len(snapshot._entries)
    durations.sort()
    p99 = durations[int(len(durations) * 0.99)]
    assert set(statuses) == {200}
    assert p99 <= 0.1, p99
    # REPORT_MAX_AGE (5 s): at most two probes per target in the 10 s.
    assert snapshot.started - probes_before <= 2 * targets, (snapshot.started, targets)
