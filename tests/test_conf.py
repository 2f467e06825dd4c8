from __future__ import annotations

import re

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from resilient_db import conf
from resilient_db.conf import get_settings, parse_settings
from resilient_db.dburl import parse_database_url
from resilient_db.ranges import RANGES


def ids(raw: object) -> list[str]:
    return [p.id for p in parse_settings(raw)[1]]


def test_defaults_when_unset() -> None:
    parsed, problems = parse_settings(None)
    assert problems == []
    assert parsed.check_interval == 5.0
    assert parsed.retry.reads == 2
    assert parsed.pinning.cookie == "rdb_pin"
    assert parsed.alias("anything").peers == ()


def test_monitor_settings_default_and_turn_off() -> None:
    parsed, _ = parse_settings(None)
    assert parsed.retry.hold == 0.0
    assert parsed.health.heartbeat_after == 0.5
    assert parsed.health.heartbeat_timeout == 1.0
    parsed, problems = parse_settings(
        {"RETRY": {"HOLD": 3.0}, "HEALTH": {"HEARTBEAT_AFTER": None, "HEARTBEAT_TIMEOUT": 2.0}}
    )
    assert problems == []
    assert parsed.retry.hold == 3.0
    assert parsed.health.heartbeat_after is None
    assert parsed.health.heartbeat_timeout == 2.0
    assert ids({"HEALTH": {"HEARTBEAT_AFTER": 0}}) == ["resilient_db.E004"]


def test_full_shape_parses() -> None:
    parsed, problems = parse_settings(
        {
            "DATABASES": {
                "default": {
                    "PEERS": [
                        "postgres://u:p%40ss@pgb-b:6432/app?sslmode=require",
                        {"HOST": "pgb-c", "PORT": 6432, "PRIORITY": 2},
                        "other",
                    ],
                    "REPLICAS": ["replica"],
                    "MAX_REPLICA_LAG": 2.5,
                    "MAX_REPLICA_LAG_BYTES": 16 * 2**20,
                    "ROLE": "primary",
                    "POLICY": "round_robin",
                }
            },
            "CHECK_INTERVAL": 1,
            "MAX_CHECK_INTERVAL": 30,
            "RETRY": {"READS": 3, "DEADLINE": 2.0},
            "PINNING": {"SECONDS": 5, "SAMESITE": "Strict", "MODE": "lsn"},
            "REGISTRY": {"STORE": "cache", "CACHE": "redis"},
        }
    )
    assert problems == []
    cfg = parsed.alias("default")
    assert [p.alias for p in cfg.peers] == [None, None, "other"]
    assert cfg.peers[0].overrides == {
        "HOST": "pgb-b",
        "PORT": "6432",
        "NAME": "app",
        "USER": "u",
        "PASSWORD": "p@ss",
        "OPTIONS": {"sslmode": "require"},
    }
    assert cfg.peers[1].overrides == {"HOST": "pgb-c", "PORT": "6432"}
    assert cfg.peers[1].priority == 2
    assert cfg.max_replica_lag_bytes == 16 * 2**20
    assert isinstance(cfg.max_replica_lag_bytes, int)
    assert cfg.replicas == ("replica",)
    assert cfg.max_replica_lag == 2.5
    assert parsed.primary_of("replica") == "default"
    assert parsed.replica_aliases() == frozenset({"replica"})
    assert parsed.pinning.mode == "lsn"
    assert parsed.registry.store == "cache"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([], "resilient_db.E002"),
        ({"BOGUS": 1}, "resilient_db.E003"),
        ({"CHECK_INTERVAL": 0}, "resilient_db.E004"),
        ({"CHECK_INTERVAL": -1}, "resilient_db.E004"),
        ({"CHECK_INTERVAL": float("nan")}, "resilient_db.E004"),
        ({"CONNECT_TIMEOUT": "2"}, "resilient_db.E004"),
        ({"RETRY": {"READS": -1}}, "resilient_db.E004"),
        ({"RETRY": {"READS": True}}, "resilient_db.E004"),
        ({"STICKY_REPLICA": "yes"}, "resilient_db.E005"),
        ({"REGISTRY": {"STORE": "memcache"}}, "resilient_db.E006"),
        ({"PINNING": {"COOKIE": ""}}, "resilient_db.E007"),
        ({"DATABASES": {"default": {"PEERS": ["ftp://x"]}}}, "resilient_db.E008"),
        ({"DATABASES": {"default": {"PEERS": [{"NAME": "x"}]}}}, "resilient_db.E008"),
        ({"DATABASES": {"default": {"PEERS": [{"HOST": "x", "HSOT": 1}]}}}, "resilient_db.E008"),
        ({"DATABASES": {"default": {"PEERS": [3]}}}, "resilient_db.E008"),
        ({"DATABASES": {"default": {"PEERS": "x"}}}, "resilient_db.E009"),
        ({"DATABASES": {"default": {"REPLICAS": [""]}}}, "resilient_db.E009"),
        ({"ERROR_CODES": {"nope": ["1"]}}, "resilient_db.E010"),
        ({"ERROR_CODES": {"connection_lost": "57P01"}}, "resilient_db.E010"),
        ({"CHECK_INTERVAL": 10, "MAX_CHECK_INTERVAL": 5}, "resilient_db.E011"),
    ],
)
def test_bad_values_are_reported(raw: object, expected: str) -> None:
    problems = parse_settings(raw)[1]
    assert expected in [p.id for p in problems]
    for p in problems:
        assert p.msg and p.hint and p.key


def test_problem_message_names_the_key() -> None:
    (problem,) = parse_settings({"RETRY": {"DEADLINE": 0}})[1]
    assert "RETRY" in problem.key and "DEADLINE" in problem.key
    assert "DEADLINE" in problem.msg


def test_get_settings_raises_with_ids() -> None:
    with (
        override_settings(RESILIENT_DB={"CHECK_INTERVAL": -5}),
        pytest.raises(ImproperlyConfigured, match=r"resilient_db\.E004"),
    ):
        get_settings()
    assert get_settings().check_interval == 1.0  # tests/settings.py again


def test_override_settings_is_seen() -> None:
    before = get_settings()
    with override_settings(RESILIENT_DB={"CHECK_INTERVAL": 42}):
        assert get_settings().check_interval == 42
    assert get_settings() == before


def test_cache_survives_unrelated_setting_changes() -> None:
    first = get_settings()
    with override_settings(DEBUG=True):
        assert get_settings() is first
    conf.clear_cache()
    assert get_settings() is not first


def test_reset_forgets_the_parsed_settings() -> None:
    first = get_settings()
    conf.reset()
    assert get_settings() is not first
    assert get_settings() == first


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://h:5433/db", {"HOST": "h", "PORT": "5433", "NAME": "db"}),
        ("mysql://u:p@h/db", {"HOST": "h", "NAME": "db", "USER": "u", "PASSWORD": "p"}),
        ("postgresql://%2Fvar%2Frun/db", {"HOST": "/var/run", "NAME": "db"}),
    ],
)
def test_database_urls(url: str, expected: dict[str, str]) -> None:
    assert parse_database_url(url) == expected


@pytest.mark.parametrize("url", ["http://h/db", "postgres:///db", "postgres://h:port/db"])
def test_bad_database_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_database_url(url)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
keys = st.sampled_from(
    ["DATABASES", "PEERS", "REPLICAS", "CHECK_INTERVAL", "RETRY", "READS", "PINNING",
     "SAMESITE", "REGISTRY", "STORE", "HEALTH", "ERROR_CODES", "HOST", "PORT", "default"]
)
shapes = st.recursive(
    json_values,
    lambda children: st.dictionaries(keys | st.text(max_size=6), children, max_size=5)
    | st.lists(children, max_size=3),
    max_leaves=30,
)


@given(shapes)
def test_any_shape_gives_problems_never_a_traceback(raw: object) -> None:
    parsed, problems = parse_settings(raw)
    assert parsed.max_check_interval >= parsed.check_interval > 0
    for p in problems:
        assert p.id.startswith("resilient_db.")


# ----- numeric ranges ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"CHECK_INTERVAL": 10**400}, "resilient_db.E004"),
        ({"MAX_CHECK_INTERVAL": -(10**400)}, "resilient_db.E004"),
        ({"CHECK_INTERVAL": float("inf")}, "resilient_db.E004"),
        ({"CONNECT_TIMEOUT": float("-inf")}, "resilient_db.E004"),
        ({"PINNING": {"SECONDS": 1e15}}, "resilient_db.E004"),
        ({"PINNING": {"SECONDS": float("nan")}}, "resilient_db.E004"),
        ({"HEALTH": {"PROBE_TIMEOUT": 1e10}}, "resilient_db.E004"),
        ({"RETRY": {"READS": 10**400}}, "resilient_db.E004"),
        ({"RETRY": {"ATOMIC_ATTEMPTS": 2.0}}, "resilient_db.E004"),
        ({"RETRY": {"DEADLINE": 1e300}}, "resilient_db.E004"),
        ({"STALL_TIMEOUT": 10**5000}, "resilient_db.E004"),
        ({"DATABASES": {"default": {"MAX_REPLICA_LAG": 1e12}}}, "resilient_db.E004"),
        ({"DATABASES": {"default": {"MAX_REPLICA_LAG_BYTES": 2**41}}}, "resilient_db.E004"),
        ({"DATABASES": {"default": {"MAX_REPLICA_LAG_BYTES": 0}}}, "resilient_db.E004"),
        ({"DATABASES": {"default": {"MAX_REPLICA_LAG_BYTES": 1e6}}}, "resilient_db.E004"),
        ({"DATABASES": {"default": {"MAX_REPLICA_LAG_BYTES": "16MB"}}}, "resilient_db.E004"),
        ({"DATABASES": {"default": {"PEERS": [{"HOST": "x", "PRIORITY": 10**400}]}}},
         "resilient_db.E008"),
        ({"DATABASES": {"default": {"PEERS": [{"HOST": "x", "PORT": "abc"}]}}},
         "resilient_db.E008"),
        ({"DATABASES": {"default": {"PEERS": [{"HOST": "x", "PORT": 70000}]}}},
         "resilient_db.E008"),
        ({"DATABASES": {10**5000: {}}}, "resilient_db.E003"),
        ({10**5000: 1}, "resilient_db.E003"),
        ({"DATABASES": {"default": {"PEERS": [{"HOST": "x", "PORT": 10**5000}]}}},
         "resilient_db.E008"),
        ({"DATABASES": {"default": {"PEERS": [{"HOST": "x", 10**5000: 1}]}}},
         "resilient_db.E008"),
        ({"ERROR_CODES": {"connection_lost": [10**5000]}}, "resilient_db.E010"),
        ({"ERROR_CODES": {"connection_lost": [-1]}}, "resilient_db.E010"),
    ],
)
def test_out_of_range_numbers_are_check_errors(raw: object, expected: str) -> None:
    problems = parse_settings(raw)[1]
    assert expected in [p.id for p in problems]
    for p in problems:
        assert len(p.msg) < 400  # a huge number is described, not printed in full


@pytest.mark.parametrize("where", sorted(RANGES))
def test_every_range_is_enforced_at_its_bounds(where: str) -> None:
    accepted = RANGES[where]
    parts = [p for p in where.split(".") if p != "<alias>"]

    def build(value: object) -> object:
        if parts[0] == "ERROR_CODES[]":
            return {"ERROR_CODES": {"connection_lost": [value]}}
        if parts[0] == "DATABASES" and parts[1] == "PEERS[]":
            return {"DATABASES": {"default": {"PEERS": [{"HOST": "h", parts[2]: value}]}}}
        if parts[0] == "DATABASES":
            return {"DATABASES": {"default": {parts[1]: value}}}
        if len(parts) == 2:
            return {parts[0]: {parts[1]: value}}
        return {parts[0]: value, **({"MAX_CHECK_INTERVAL": 86400} if parts[0] == "CHECK_INTERVAL" else {})}

    high = int(accepted.high) if accepted.whole else accepted.high
    assert parse_settings(build(high))[1] == []
    assert parse_settings(build(high + 1))[1] != []
    assert parse_settings(build(10**400))[1] != []
    low_ok = parse_settings(build(int(accepted.low) if accepted.whole else accepted.low))[1] == []
    assert low_ok is accepted.low_inclusive


def test_every_range_is_documented() -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parent.parent / "docs" / "settings.md").read_text("utf-8")
    sections = {}
    top = ""
    for block in re.split(r"^(?=##+ )", docs, flags=re.M):
        heading = block.split("\n", 1)[0]
        if heading.startswith("## "):
            top = heading[3:].strip()
            sections[(top, None)] = block
        elif heading.startswith("### "):
            sections[(top, heading[4:].strip())] = block
    for where, accepted in RANGES.items():
        parts = [p.removesuffix("[]") for p in where.split(".") if p != "<alias>"]
        section = sections[(parts[0], parts[1] if len(parts) > 1 else None)]
        assert f"`{accepted.describe()}`" in section, where


def test_huge_probe_timeout_and_pin_stop_the_run_time() -> None:
    for raw in ({"HEALTH": {"PROBE_TIMEOUT": 1e10}}, {"PINNING": {"SECONDS": 1e15}}):
        with (
            override_settings(RESILIENT_DB=raw),
            pytest.raises(ImproperlyConfigured, match=r"resilient_db\.E004"),
        ):
            get_settings()


@pytest.mark.parametrize(
    "peer",
    [
        {"HOST": "x", "OPTIONS": "connect_timeout=2"},
        {"HOST": 5},
        {"HOST": "x", "PASSWORD": 1234},
    ],
)
def test_peer_dict_fields_of_the_wrong_type_are_check_errors(peer: dict[str, object]) -> None:
    problems = parse_settings({"DATABASES": {"default": {"PEERS": [peer]}}})[1]
    assert [p.id for p in problems] == ["resilient_db.E008"]


@pytest.mark.parametrize(
    "pinning",
    [
        {"COOKIE": "a b"},  # CookieError on every response that pins
        {"COOKIE": "rdb;pin"},
        {"COOKIE": "é"},
        {"PATH": "app/"},
        {"PATH": "/a;b"},
        {"DOMAIN": "example.com; Secure"},
    ],
)
def test_cookie_attributes_a_response_cannot_carry_are_check_errors(
    pinning: dict[str, str]
) -> None:
    problems = parse_settings({"PINNING": pinning})[1]
    assert [p.id for p in problems] == ["resilient_db.E007"]


def test_ordinary_cookie_attributes_pass() -> None:
    raw = {"PINNING": {"COOKIE": "db_pin-1", "PATH": "/app/", "DOMAIN": ".example.com"}}
    assert parse_settings(raw)[1] == []
