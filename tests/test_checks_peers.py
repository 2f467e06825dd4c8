"""Peer options a driver would refuse (E018), and connect timeouts that stop failover (W019)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from resilient_db import checks as rdb_checks
from resilient_db.conf import get_settings
from resilient_db.dburl import parse_database_url

PG = {"ENGINE": "resilient_db.backends.postgresql", "HOST": "pg-a", "PORT": "5432", "NAME": "app"}
MY = {"ENGINE": "resilient_db.backends.mysql", "HOST": "my-a", "PORT": "3306", "NAME": "app"}
DBS: dict[str, dict[str, Any]] = {
    "default": PG,
    "replica": {**PG, "HOST": "pg-r"},
    "mysql": MY,
}


@contextmanager
def configured(rdb: dict[str, Any], **databases: dict[str, Any]) -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Overriding setting DATABASES", UserWarning)
        with override_settings(DATABASES={**DBS, **databases}, RESILIENT_DB=rdb):
            yield


def ids(rdb: dict[str, Any], **databases: dict[str, Any]) -> list[str]:
    with configured(rdb, **databases):
        messages = rdb_checks.check_consistency()
    for m in messages:
        assert m.hint and m.obj
    return sorted(m.id or "" for m in messages)


def peers(alias: str, *items: object) -> dict[str, Any]:
    return {"DATABASES": {alias: {"PEERS": list(items)}}}


@pytest.mark.parametrize(
    ("alias", "peer"),
    [
        ("default", "postgres://pgb-b:6432/app?connect_timeout=abc"),
        ("default", "postgres://pgb-b:6432/app?nosuchoption=1"),
        ("default", "postgres://pgb-b:6432/app?sslmode=sometimes"),
        ("default", {"HOST": "pgb-c", "OPTIONS": {"keepalives_idle": "soon"}}),
        ("mysql", "mysql://my-b:3306/app?nosuchoption=1"),
        ("mysql", "mysql://my-b:3306/app?connect_timeout=abc"),
        ("mysql", {"HOST": "my-c", "OPTIONS": {"read_timeout": 1.5}}),
    ],
)
def test_peer_options_no_driver_accepts_are_errors(alias: str, peer: object) -> None:
    assert ids(peers(alias, peer)) == ["resilient_db.E018"]
    with configured(peers(alias, peer)), pytest.raises(ImproperlyConfigured, match="E018"):
        get_settings()


@pytest.mark.parametrize(
    ("alias", "peer"),
    [
        ("default", "postgres://pgb-b:6432/app?connect_timeout=1&sslmode=require"),
        ("default", "postgres://pgb-b:6432/app?application_name=web&target_session_attrs=any"),
        ("default", {"HOST": "pgb-c", "OPTIONS": {"keepalives_idle": 5, "pool": False}}),
        ("mysql", "mysql://my-b:3306/app?connect_timeout=1&charset=utf8mb4"),
        ("mysql", {"HOST": "my-c", "OPTIONS": {"init_command": "SET x=1", "ssl": {}}}),
    ],
)
def test_peer_options_a_driver_accepts_pass(alias: str, peer: object) -> None:
    assert ids(peers(alias, peer)) == []


def test_mysql_url_integers_reach_the_driver_as_integers() -> None:
    # mysqlclient refuses connect_timeout="2"; a URL query has only strings.
    parsed = parse_database_url("mysql://h/app?connect_timeout=2&charset=utf8mb4")
    assert parsed["OPTIONS"] == {"connect_timeout": 2, "charset": "utf8mb4"}
    assert parse_database_url("postgres://h/app?connect_timeout=2")["OPTIONS"] == {
        "connect_timeout": "2"
    }


# ----- W019: one attempt may take the whole deadline -------------------------

DEADLINE_5 = {"RETRY": {"DEADLINE": 5.0}}


def test_options_connect_timeout_at_the_deadline_warns() -> None:
    rdb = {**DEADLINE_5, **peers("default", {"HOST": "pgb-b"})}
    found = ids(rdb, default={**PG, "OPTIONS": {"connect_timeout": 5}})
    assert found == ["resilient_db.W019"]
    with configured(rdb, default={**PG, "OPTIONS": {"connect_timeout": 5}}):
        (message,) = rdb_checks.check_consistency()
        assert get_settings()  # a warning never stops the run time
    assert "failover to the next target cannot happen" in message.msg
    assert "DATABASES['default']['OPTIONS']['connect_timeout']" in message.msg
    assert "half of RETRY['DEADLINE']" in (message.hint or "")


def test_replica_alias_falls_back_so_it_warns_too() -> None:
    rdb = {**DEADLINE_5, "DATABASES": {"default": {"REPLICAS": ["replica"]}}}
    found = ids(rdb, replica={**PG, "HOST": "pg-r", "OPTIONS": {"connect_timeout": "30"}})
    assert found == ["resilient_db.W019"]


def test_a_peer_own_connect_timeout_warns() -> None:
    rdb = {**DEADLINE_5, **peers("default", "postgres://pgb-b/app?connect_timeout=9")}
    assert ids(rdb) == ["resilient_db.W019"]


def test_connect_timeout_setting_at_the_deadline_warns() -> None:
    # libpq never waits less than 2 s: CONNECT_TIMEOUT 1 with a 2 s deadline.
    rdb = {"CONNECT_TIMEOUT": 1.0, "RETRY": {"DEADLINE": 2.0}, **peers("default", {"HOST": "b"})}
    assert ids(rdb) == ["resilient_db.W019"]


@pytest.mark.parametrize(
    ("rdb", "databases"),
    [
        # Below the deadline.
        ({**DEADLINE_5, **peers("default", {"HOST": "b"})},
         {"default": {**PG, "OPTIONS": {"connect_timeout": 2}}}),
        # Nothing to fail over to: no peers, not a replica.
        (DEADLINE_5, {"default": {**PG, "OPTIONS": {"connect_timeout": 60}}}),
        # The defaults.
        (peers("default", {"HOST": "b"}), {}),
    ],
)
def test_room_for_failover_is_quiet(rdb: dict[str, Any], databases: dict[str, Any]) -> None:
    assert ids(rdb, **databases) == []


# ----- found by the settings fuzz: peers no driver of this alias can use ----


@pytest.mark.parametrize(
    ("alias", "peer"),
    [
        ("default", "mysql"),  # an alias of another ENGINE: its OPTIONS reach libpq
        ("default", "mysql://my-b:3306/app"),
        ("mysql", "postgres://pgb-b:6432/app"),
        ("default", "postgres://pgb-b:6432/" + "x" * 64),  # Django refuses the NAME
        ("default", {"HOST": "pgb-c", "NAME": "x" * 64}),
    ],
)
def test_peers_the_alias_driver_cannot_use_are_errors(alias: str, peer: object) -> None:
    assert ids(peers(alias, peer)) == ["resilient_db.E018"]


@pytest.mark.parametrize(
    ("rdb", "databases"),
    [
        (peers("default", {"HOST": "b", "OPTIONS": {"connect_timeout": 10**5000}}), {}),
        (peers("default", {"HOST": "b", "OPTIONS": {10**5000: 1}}), {}),
        (peers("mysql", {"HOST": "b", "OPTIONS": {"read_timeout": 10**400}}), {}),
        (peers("default", {"HOST": "b"}),
         {"default": {**PG, "OPTIONS": {"connect_timeout": 10**5000}}}),
        (peers("default", {"HOST": "b"}),
         {"default": {**PG, "OPTIONS": {"connect_timeout": float("nan")}}}),
    ],
)
def test_huge_option_values_give_messages_not_exceptions(
    rdb: dict[str, Any], databases: dict[str, Any]
) -> None:
    found = ids(rdb, **databases)  # never raises
    assert set(found) <= {"resilient_db.E018", "resilient_db.W019"}
    if not databases:
        assert found == ["resilient_db.E018"]
