"""Whole RESILIENT_DB dicts, fuzzed: check messages or a configuration that works.

Two properties over the same generator (types, NaN and infinities, huge
numbers, junk keys, odd URLs with IPv6 hosts and percent-encoding):

1. validating never raises: the only outcome is check messages, each with an
   id, the key and a hint;
2. a configuration without errors is one the run time can use: settings,
   targets, every target's driver parameters (checked by psycopg's own
   conninfo builder on PostgreSQL), the registry, the pin cookie and every
   timeout handed to a lock or a timedelta.
"""

from __future__ import annotations

import datetime
import math
import threading
import warnings
from typing import Any

from django.conf import settings as dj_settings
from django.core import checks
from django.db import connections
from django.http import HttpResponse
from django.test import override_settings
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from resilient_db import checks as rdb_checks
from resilient_db.conf import get_settings
from resilient_db.health.checks import check_registry
from resilient_db.health.registry import get_registry, reset_registry
from resilient_db.health.targets import build_targets
from resilient_db.peers import PG_NOT_LIBPQ
from resilient_db.validation import errors_of, validate_current

ALIASES = ["default", "replica", "bouncers", "mysql", "mysql_replica", "mysql_peers", "sqlite"]

huge = st.sampled_from([10**400, -(10**400), 10**20, 1e15, 1e10, 1e300, 2**63])
odd_floats = st.floats(allow_nan=True, allow_infinity=True)
junk = st.one_of(
    st.none(), st.booleans(), huge, odd_floats, st.integers(-3, 10**6), st.text(max_size=6),
    st.binary(max_size=3), st.lists(st.integers(), max_size=2),
)


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Return ``valid`` about 6 times in 7, junk otherwise, so whole dicts pass often enough."""
    # one_of() would pick each branch evenly (and merges repeated branches).
    return st.integers(0, 6).flatmap(lambda i: junk if i == 6 else valid)


junk_key = st.one_of(st.text(max_size=5), st.integers(), huge)  # a key no dict expects
seconds = mostly(st.one_of(st.floats(0.01, 30.0), st.integers(0, 100)))
count = mostly(st.integers(0, 5))
nbytes = mostly(st.one_of(st.integers(1, 2**30), st.sampled_from([0, -1, 2**41, 1.5, 1e6])))

def odd(valid: list[str], invalid: list[str]) -> st.SearchStrategy[str]:
    """Return one of ``valid`` about 3 times in 4, else one of ``invalid``."""
    return st.integers(0, 3).flatmap(
        lambda i: st.sampled_from(invalid) if i == 3 else st.sampled_from(valid)
    )


hosts = odd(
    ["127.0.0.1", "db-b", "[::1]", "[fe80::1%25eth0]", "%2Fvar%2Frun%2Fpg", "db-c",
     "[2001:db8::7]", "xn--bcher-kva.example"],
    ["[::1", "h%40x", "", "a b", "[not-ipv6]"],
)
ports = odd(["", ":6432", ":5432", ":6433"], [":0", ":99999", ":abc", ":"])
userinfo = odd(["", "u@", "u:p@", "u:p%40ss%3A@", ":only-pass@", "u:@"], ["%zz:x@", "@", "u:p:q@"])
names = odd(["", "/app", "/a%2Fb", "/test_rdb"], ["/%00", "/" + "x" * 300])
queries = st.lists(
    odd(
        ["connect_timeout=1", "sslmode=require", "application_name=x%20y", "charset=utf8mb4",
         "read_timeout=2", "keepalives_idle=5"],
        ["connect_timeout=abc", "nosuchoption=1", "sslmode=sometimes", "keepalives_idle=soon",
         "=", "a", "&", "connect_timeout=99999999999999999999"],
    ),
    max_size=3,
).map(lambda parts: ("?" + "&".join(parts)) if parts else "")
schemes = odd(["postgres", "postgresql", "mysql", "mariadb"], ["sqlite", "ftp", "", "pg", "HTTP"])
urls = st.builds(
    lambda s, u, h, p, n, q: f"{s}://{u}{h}{p}{n}{q}", schemes, userinfo, hosts, ports, names, queries
)
peer_dicts = st.fixed_dictionaries(
    {"HOST": mostly(hosts)},
    optional={
        "PORT": mostly(st.sampled_from(["6432", 5432, "abc", 0, 70000, None, 10**5000])),
        "NAME": mostly(st.just("test_rdb")),
        "PASSWORD": mostly(st.just("S3cret")),
        "OPTIONS": mostly(
            st.dictionaries(
                st.sampled_from(["connect_timeout", "sslmode", "nosuch", "pool", "read_timeout",
                                 "application_name"]),
                st.one_of(st.integers(0, 9), st.sampled_from(["require", "abc", "1", "x"]), huge),
                max_size=2,
            )
        ),
        "PRIORITY": st.one_of(st.integers(-5, 5), st.integers(-5, 5), huge, junk),
    },
)
# Well-formed peers too, so that whole accepted configurations with peers are
# reached often enough for the run-time half of the property to mean something.
clean_peer_dicts = st.fixed_dictionaries(
    {"HOST": st.sampled_from(["127.0.0.1", "pgbouncer-b", "::1"])},
    optional={"PORT": st.sampled_from(["6432", 5432]), "NAME": st.just("test_rdb")},
)
peers = mostly(
    st.lists(
        st.one_of(
            urls,
            peer_dicts,
            clean_peer_dicts,
            st.builds(lambda d, k, v: {**d, k: v}, peer_dicts, junk_key, junk),
            odd(ALIASES, ["ghost", "pgb-b:6432", "replcia"]),
        ),
        max_size=3,
    )
)
alias_cfg = mostly(
    st.fixed_dictionaries(
        {},
        optional={
            "PEERS": peers,
            "REPLICAS": mostly(st.lists(st.sampled_from(ALIASES + ["replcia"]), max_size=2)),
            "MAX_REPLICA_LAG": st.one_of(seconds, st.none()),
            "MAX_REPLICA_LAG_BYTES": st.one_of(nbytes, st.none()),
            "ROLE": mostly(st.sampled_from(["primary", "replica", None])),
            "POLICY": mostly(st.sampled_from(["priority", "random", "round_robin"])),
            "STALL_TIMEOUT": st.one_of(seconds, st.none()),
        },
    )
)
rdb_dicts = st.fixed_dictionaries(
    {},
    optional={
        "DATABASES": mostly(
            st.dictionaries(
                st.integers(0, 6).flatmap(
                    lambda i: junk_key if i == 6 else st.sampled_from(ALIASES + ["defualt"])
                ),
                alias_cfg,
                max_size=3,
            )
        ),
        "CHECK_INTERVAL": seconds,
        "MAX_CHECK_INTERVAL": seconds,
        "CONNECT_TIMEOUT": seconds,
        "STALL_TIMEOUT": st.one_of(seconds, st.none()),
        "RETRY": mostly(
            st.fixed_dictionaries(
                {},
                optional={"READS": count, "DEADLINE": seconds, "BACKOFF": seconds,
                          "ATOMIC_ATTEMPTS": count, "HOLD": seconds},
            )
        ),
        "REPLICA_POLICY": mostly(st.sampled_from(["round_robin", "random", "least_lag"])),
        "STICKY_REPLICA": mostly(st.booleans()),
        "PINNING": mostly(
            st.fixed_dictionaries(
                {},
                optional={"SECONDS": seconds, "COOKIE": mostly(st.just("pin")),
                          "SAMESITE": mostly(st.sampled_from(["Lax", "None", None])),
                          "MODE": mostly(st.sampled_from(["time", "lsn"]))},
            )
        ),
        "REGISTRY": mostly(
            st.fixed_dictionaries(
                {},
                optional={"STORE": mostly(st.sampled_from(["local", "cache"])),
                          "CACHE": mostly(st.sampled_from(["default", "redis", "nope"])),
                          "LOCAL_TTL": seconds},
            )
        ),
        "HEALTH": mostly(
            st.fixed_dictionaries(
                {},
                optional={"IDLE_PING_AFTER": seconds, "SHOW_HOSTS": mostly(st.booleans()),
                          "PROBE_TIMEOUT": seconds, "LAG_CHECK_INTERVAL": seconds,
                          "HEARTBEAT_AFTER": st.one_of(seconds, st.none()),
                          "HEARTBEAT_TIMEOUT": seconds},
            )
        ),
        "ERROR_CODES": mostly(
            st.dictionaries(
                odd(["connection_lost", "too_many_connections"], ["nope"]),
                mostly(st.lists(st.one_of(st.sampled_from(["57P05", "08006"]), huge))),
            )
        ),
    },
)
whole = st.one_of(
    rdb_dicts,
    st.builds(lambda d, k, v: {**d, k: v}, rdb_dicts, junk_key, junk),  # a junk top-level key
    junk,
)


def _check_all() -> list[checks.CheckMessage]:
    return [
        *rdb_checks.check_settings(),
        *rdb_checks.check_consistency(),
        *rdb_checks.check_installation(),
        *check_registry(),
    ]


def _use_at_run_time() -> None:
    """Do with the settings what requests, connections and probes do with them."""
    s = get_settings()
    for timeout in (s.check_interval, s.max_check_interval, s.connect_timeout, s.retry.deadline,
                    s.retry.backoff, s.registry.local_ttl, s.health.probe_timeout,
                    s.health.lag_check_interval, s.health.idle_ping_after, s.stall_timeout or 1):
        lock = threading.Lock()
        assert lock.acquire(timeout=timeout)  # OverflowError past threading.TIMEOUT_MAX
        lock.release()
        datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=timeout)
    HttpResponse().set_cookie(s.pinning.cookie, "v", max_age=math.ceil(s.pinning.seconds))
    reset_registry()
    get_registry()
    for alias in dj_settings.DATABASES:
        base = connections[alias].settings_dict
        for target in build_targets(alias, base, s.alias(alias)):
            merged = target.settings_dict(base)
            wrapper = type(connections[alias])(merged, alias)
            params = wrapper.get_connection_params()
            if wrapper.vendor == "postgresql":
                # What the driver does before connecting: unknown keys and bad
                # values are refused here (by libpq's own parser), not on the wire.
                _make_dsn(**{k: v for k, v in params.items() if k not in PG_NOT_LIBPQ})


def _make_dsn(**params: Any) -> str:
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    if is_psycopg3:
        from psycopg.conninfo import make_conninfo

        return make_conninfo("", **params)
    from psycopg2.extensions import make_dsn  # the psycopg2-only cell

    return str(make_dsn(**params))


@settings(
    max_examples=250, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(rdb=whole)
def test_whole_settings_give_messages_or_work(rdb: Any) -> None:
    try:
        note(repr(rdb)[:2000])
    except ValueError:  # a 5000-digit int has no repr; hypothesis prints the example anyway
        note("(no repr)")
    with warnings.catch_warnings(), override_settings(RESILIENT_DB=rdb):
        messages = _check_all()
        for m in messages:
            assert isinstance(m, checks.CheckMessage)
            assert m.id and m.id.startswith("resilient_db.") and m.hint and m.obj
        _parsed, problems = validate_current()
        errors = errors_of(problems)
        # The checks and the run-time guard agree on what is an error.
        assert {p.id for p in errors} <= {m.id for m in messages if m.is_serious()}
        if not errors:
            _use_at_run_time()
    reset_registry()


@settings(
    max_examples=250, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(alias=st.sampled_from(ALIASES), cfg=alias_cfg)
def test_one_alias_with_peers_gives_messages_or_works(alias: str, cfg: Any) -> None:
    # Whole dicts rarely get every peer of every alias right; one alias at a
    # time reaches the run time with peers far more often.
    test_whole_settings_give_messages_or_work.hypothesis.inner_test(  # type: ignore[attr-defined]
        rdb={"DATABASES": {alias: cfg}}
    )


def test_the_generators_reach_accepted_configurations() -> None:
    # A fuzz whose every example is rejected proves nothing about property 2.
    whole_ok: list[Any] = []
    peers_ok: list[Any] = []

    def accepted(rdb: Any) -> Any:
        with override_settings(RESILIENT_DB=rdb):
            parsed, problems = validate_current()
        return None if errors_of(problems) else parsed

    @settings(
        max_examples=1500, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(rdb=rdb_dicts, alias=st.sampled_from(ALIASES), cfg=alias_cfg)
    def sample(rdb: Any, alias: str, cfg: Any) -> None:
        if accepted(rdb) is not None:
            whole_ok.append(rdb)
        parsed = accepted({"DATABASES": {alias: cfg}})
        if parsed is not None and parsed.alias(alias).peers:
            peers_ok.append(cfg)

    sample()
    assert len(whole_ok) >= 20, len(whole_ok)
    assert len(peers_ok) >= 5, len(peers_ok)
