"""The topology model and the replica-freshness verdict: pure rules, no servers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_db.conf import get_settings, parse_settings
from resilient_db.health.freshness import (
    LagLimits,
    judge_replica,
    lag_bytes,
    lag_within,
    max_measurement_age,
    measurement_verdict,
    primary_position,
)
from resilient_db.topology import Topology, get_topology, topology_of


def topology(raw: object) -> Topology:
    parsed, _ = parse_settings(raw)
    return Topology.build(parsed)


SITE = {
    "DATABASES": {
        "default": {"REPLICAS": ["replica", "other_replica"], "MAX_REPLICA_LAG": 5.0},
        "mysql": {"REPLICAS": ["mysql_replica"], "ROLE": "primary"},
        "bouncers": {"PEERS": ["postgres://pgb-b:6432/app"]},
        "reporting": {"ROLE": "replica"},
    }
}


def test_groups_primaries_and_replicas() -> None:
    site = topology(SITE)
    assert site.replicas == {"default": ("replica", "other_replica"), "mysql": ("mysql_replica",)}
    assert site.replicas_of("default") == ("replica", "other_replica")
    assert site.replicas_of("bouncers") == ()
    assert site.max_lag == {"default": 5.0, "mysql": None}
    assert site.group_of == {
        "default": "default",
        "replica": "default",
        "other_replica": "default",
        "mysql": "mysql",
        "mysql_replica": "mysql",
    }
    assert site.replica_set == {"replica", "other_replica", "mysql_replica"}
    assert site.primary_of("replica") == "default"
    assert site.primary_of("default") is None
    assert site.primary_of("reporting") is None  # ROLE replica alone makes no group
    assert [site.kind(a) for a in ("default", "replica", "bouncers", "reporting")] == [
        "primary",
        "replica",
        "standalone",
        "standalone",
    ]


def test_which_aliases_need_a_writable_server() -> None:
    site = topology(SITE)
    # The registry's rule (docs/health.md): all but replicas and ROLE "replica".
    assert site.needs_writable("default")
    assert site.needs_writable("mysql")
    assert site.needs_writable("bouncers")
    assert site.needs_writable("unlisted")
    assert not site.needs_writable("replica")
    assert not site.needs_writable("reporting")
    # The report's rule (docs/settings.md ROLE): ROLE "primary" or REPLICAS.
    assert site.expected_role("default") == "primary"
    assert site.expected_role("mysql") == "primary"
    assert site.expected_role("replica") == "replica"
    assert site.expected_role("reporting") == "replica"
    assert site.expected_role("bouncers") is None


def test_a_replica_listed_twice_is_judged_against_the_first_primary() -> None:
    # W016 warns about it; the routers, the registry and the report agree.
    site = topology({"DATABASES": {"a": {"REPLICAS": ["r"]}, "b": {"REPLICAS": ["r"]}}})
    assert site.primary_of("r") == "a"
    assert site.group_of["r"] == "a"
    assert site.replicas_of("b") == ("r",)


def test_a_primary_listed_as_a_replica_heads_its_own_group() -> None:
    site = topology({"DATABASES": {"a": {"REPLICAS": ["b"]}, "b": {"REPLICAS": ["c"]}}})
    assert site.group_of["b"] == "b"
    assert site.primary_of("b") == "a"
    assert site.kind("b") == "replica"
    assert not site.needs_writable("b")


def test_built_once_per_settings_object() -> None:
    current = get_topology()
    assert get_topology() is current
    assert current.settings is get_settings()
    other, _ = parse_settings(SITE)
    assert topology_of(other).settings is other
    assert get_topology().settings is get_settings()


# ----- freshness -------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    usable: bool = True
    lag: float | None = None
    lag_measured_at: float | None = None
    lsn: int | None = None


NOW = 1000.0


def judge(*records: Record, max_lag: float | None = 5.0, min_lsn: int | None = None) -> object:
    return judge_replica(records, max_lag=max_lag, max_age=3.5, min_lsn=min_lsn, now=NOW)


def test_lag_within_is_the_one_rule() -> None:
    assert lag_within(None, None)
    assert lag_within(99.0, None)
    assert lag_within(5.0, 5.0)
    assert not lag_within(5.01, 5.0)
    assert not lag_within(None, 5.0)


@given(st.none() | st.floats(0, 1e6), st.none() | st.floats(0, 1e6))
def test_lag_within_agrees_with_the_judgement_of_a_just_measured_replica(
    lag: float | None, max_lag: float | None
) -> None:
    record = Record(lag=lag, lag_measured_at=NOW if lag is not None else None)
    reason, _, _ = judge(record, max_lag=max_lag)
    assert (reason is None) == lag_within(lag, max_lag)


def test_a_measurement_counts_with_its_age_and_expires() -> None:
    assert judge(Record(lag=1.0, lag_measured_at=NOW - 2.0)) == (None, 3.0, None)
    assert judge(Record(lag=4.0, lag_measured_at=NOW - 2.0)) == ("lag", 6.0, None)
    assert judge(Record(lag=0.0, lag_measured_at=NOW - 4.0)) == ("unknown_lag", None, None)
    assert judge(Record()) == ("lag_unmeasured", None, None)
    assert judge(Record(), max_lag=None) == (None, None, None)


def test_each_target_is_judged_on_its_own() -> None:
    fresh = Record(lag=0.5, lag_measured_at=NOW)
    behind = Record(lag=9.0, lag_measured_at=NOW)
    assert judge(fresh, Record(usable=False, lag=99.0, lag_measured_at=NOW)) == (None, 0.5, None)
    # One fresh target is enough: the connection skips the lagging one
    # (backends/alias_targets.by_freshness), so the worst fresh one is the lag.
    assert judge(fresh, behind) == (None, 0.5, None)
    assert judge(fresh, Record(lag=2.0, lag_measured_at=NOW)) == (None, 2.0, None)
    assert judge(behind, Record(lag=7.0, lag_measured_at=NOW)) == ("lag", 7.0, None)
    assert judge(behind, Record(lag=1.0, lag_measured_at=NOW - 9.0)) == ("unknown_lag", None, None)
    assert judge(Record(usable=False)) == ("down", None, None)


def limits(nbytes: int | None, primary_lsn: int | None, seconds: float | None = None) -> LagLimits:
    return LagLimits(seconds, nbytes, primary_lsn)


def test_the_byte_limit_is_the_primary_position_minus_the_replayed_one() -> None:
    def by_bytes(*records: Record, lim: LagLimits) -> object:
        return judge_replica(records, max_lag=lim.seconds, max_age=3.5, min_lsn=None, now=NOW,
                             limits=lim)

    near = Record(lag=0.0, lag_measured_at=NOW, lsn=9_000)
    far = Record(lag=0.0, lag_measured_at=NOW, lsn=1_000)
    assert by_bytes(near, lim=limits(1_000, 10_000))[0] is None
    assert by_bytes(far, lim=limits(1_000, 10_000)) == ("lag", 0.0, None)
    # Measured after the primary, a replica may be past its older position: 0, never negative.
    assert by_bytes(Record(lag=0.0, lag_measured_at=NOW, lsn=20_000), lim=limits(1, 10_000))[0] is None
    # Unknown on either side, with a byte limit set, is unknown lag.
    assert by_bytes(near, lim=limits(1_000, None))[0] == "unknown_lag"
    assert by_bytes(Record(lag=0.0, lag_measured_at=NOW), lim=limits(1_000, 10_000))[0] == "unknown_lag"
    assert by_bytes(Record(), lim=limits(1_000, 10_000))[0] == "lag_unmeasured"
    # Both limits hold at once: within the bytes but beyond the seconds is lag.
    slow = Record(lag=8.0, lag_measured_at=NOW, lsn=9_999)
    assert by_bytes(slow, lim=limits(1_000, 10_000, seconds=5.0)) == ("lag", 8.0, None)
    # The per-target rule: a caught-up target serves while a far one is skipped.
    assert by_bytes(far, near, lim=limits(1_000, 10_000))[0] is None


@given(st.none() | st.integers(0, 2**40), st.none() | st.integers(0, 2**40), st.integers(1, 2**40))
def test_byte_lag_is_never_negative_and_unknown_means_not_fresh(
    primary: int | None, replayed: int | None, limit: int
) -> None:
    behind = lag_bytes(primary, replayed)
    assert (behind is None) == (primary is None or replayed is None)
    assert behind is None or behind >= 0
    verdict = measurement_verdict(0.0, replayed, LagLimits(None, limit, primary))
    assert (verdict is None) == (behind is not None and behind <= limit)


def test_the_primary_position_is_the_freshest_primary_record() -> None:
    @dataclass(frozen=True)
    class Seen:
        role: str | None
        lsn: int | None
        lag_measured_at: float | None

    records = [
        Seen("primary", 500, NOW),
        Seen("replica", 900, NOW),  # a standby's replay position is no primary's
        Seen("primary", 700, NOW - 1.0),
        Seen("primary", 9_999, NOW - 10.0),  # too old to count
        Seen("primary", None, NOW),
    ]
    assert primary_position(records, max_age=3.5, now=NOW) == 700  # type: ignore[arg-type]
    assert primary_position(records[1:2], max_age=3.5, now=NOW) is None  # type: ignore[arg-type]


def test_a_pinned_write_needs_every_target_replayed_past_it() -> None:
    ahead = Record(lag=99.0, lag_measured_at=NOW, lsn=200)
    assert judge(ahead, min_lsn=150) == (None, 99.0, 200)
    assert judge(ahead, Record(lsn=100), min_lsn=150)[0] == "lsn"
    assert judge(ahead, Record(), min_lsn=150)[0] == "lsn"


def test_measurements_expire_after_three_lag_checks_and_a_probe() -> None:
    parsed, _ = parse_settings({"HEALTH": {"LAG_CHECK_INTERVAL": 2.0, "PROBE_TIMEOUT": 1.5}})
    assert max_measurement_age(parsed.health) == pytest.approx(7.5)
