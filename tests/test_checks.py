"""System checks: every key and every inconsistent combination gives an id'd message."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.core import checks
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilient_db import checks as rdb_checks

DOCS = Path(__file__).resolve().parent.parent / "docs" / "checks.md"

DBS: dict[str, dict[str, Any]] = {
    "default": {"ENGINE": "resilient_db.backends.postgresql", "HOST": "pg-a", "PORT": "5432",
                "NAME": "app"},
    "replica": {"ENGINE": "resilient_db.backends.postgresql", "HOST": "pg-r", "PORT": "5432",
                "NAME": "app"},
    "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    "mysql_replica": {"ENGINE": "resilient_db.backends.mysql", "HOST": "my-r", "PORT": "3306",
                      "NAME": "app"},
}


@contextmanager
def db_settings(**overrides: Any) -> Iterator[None]:
    """Override settings, DATABASES included (Django warns about that; harmless here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Overriding setting DATABASES", UserWarning)
        with override_settings(**overrides):
            yield


def run_all() -> list[checks.CheckMessage]:
    return (
        rdb_checks.check_settings()
        + rdb_checks.check_consistency()
        + rdb_checks.check_installation()
    )


@contextmanager
def raw_settings(**overrides: Any) -> Iterator[None]:
    """Set settings without sending setting_changed (which would build the routers)."""
    from django.conf import settings as dj

    missing = object()
    saved = {k: getattr(dj, k, missing) for k in overrides}
    try:
        for k, v in overrides.items():
            setattr(dj, k, v)
        yield
    finally:
        for k, v in saved.items():
            if v is missing:
                delattr(dj, k)
            else:
                setattr(dj, k, v)


def ids(**overrides: Any) -> list[str]:
    with raw_settings(**overrides):
        return sorted(m.id or "" for m in run_all())


def test_project_settings_are_clean() -> None:
    assert run_all() == []


def test_registered_with_django() -> None:
    # Only this app's checks: run_checks() would also run the model checks,
    # which ask the MySQL server its version (database access in a test
    # that has none) unless an earlier test happened to cache it.
    registered = checks.registry.registry.get_checks()
    ours = [c for c in registered if getattr(c, "__module__", "").startswith("resilient_db")]
    assert {c.__name__ for c in ours} >= {
        "check_settings", "check_consistency", "check_installation", "check_registry",
    }
    with override_settings(RESILIENT_DB={"DATABASES": {"nope": {}}}):
        found = [m.id for c in ours for m in c(app_configs=None)]
    assert "resilient_db.E012" in found


def test_members_of_an_ha_cluster_may_be_peers_of_a_primary_role_alias_and_its_replicas() -> None:
    # The Patroni layout of docs/ha.md: every member is a peer of the primary
    # alias (ROLE "primary" checks which one takes writes) and a server of its
    # replica alias.
    rdb = {"DATABASES": {"default": {"REPLICAS": ["replica"], "ROLE": "primary",
                                     "PEERS": [{"HOST": "pg-r", "PORT": 5432}],
                                     "MAX_REPLICA_LAG_BYTES": 16 * 2**20},
                         "replica": {"ROLE": "replica",
                                     "PEERS": [{"HOST": "pg-a", "PORT": 5432}]}}}
    with db_settings(DATABASES=DBS, RESILIENT_DB=rdb):
        messages = run_all()
    assert [m.id for m in messages if m.is_serious()] == []


@pytest.mark.parametrize(
    ("rdb", "expected"),
    [
        ({"DATABASES": {"ghost": {}}}, "resilient_db.E012"),
        ({"DATABASES": {"default": {"REPLICAS": ["ghost"]}}}, "resilient_db.E013"),
        ({"DATABASES": {"default": {"PEERS": ["ghost"]}}}, "resilient_db.E013"),
        ({"DATABASES": {"default": {"REPLICAS": ["default"]}}}, "resilient_db.E014"),
        (
            {"DATABASES": {"default": {"REPLICAS": ["replica"]},
                           "replica": {"REPLICAS": ["default"]}}},
            "resilient_db.E014",
        ),
        (
            {"DATABASES": {"default": {"REPLICAS": ["replica"]},
                           "replica": {"ROLE": "primary"}}},
            "resilient_db.E015",
        ),
        ({"DATABASES": {"default": {"REPLICAS": ["replica"], "ROLE": "replica"}}},
         "resilient_db.E015"),
        (
            {"DATABASES": {"default": {"REPLICAS": ["replica"], "PEERS": ["replica"]}}},
            "resilient_db.E016",
        ),
        (
            {"DATABASES": {"default": {"REPLICAS": ["replica"],
                                       "PEERS": [{"HOST": "pg-r", "PORT": 5432}]}}},
            "resilient_db.E016",
        ),
        ({"DATABASES": {"default": {"MAX_REPLICA_LAG": 3}}}, "resilient_db.W015"),
        ({"DATABASES": {"default": {"MAX_REPLICA_LAG_BYTES": 1024}}}, "resilient_db.W015"),
        (
            {"DATABASES": {"default": {"REPLICAS": ["mysql_replica"],
                                       "MAX_REPLICA_LAG_BYTES": 1024}}},
            "resilient_db.E021",
        ),
        ({"DATABASES": {"default": {"MAX_REPLICA_LAG_BYTES": 1.5}}}, "resilient_db.E004"),
        (
            {"DATABASES": {"default": {"REPLICAS": ["other"]}, "replica": {"REPLICAS": ["other"]}}},
            "resilient_db.W016",
        ),
        ({"DATABASES": {"other": {"PEERS": [{"HOST": "x"}]}}}, "resilient_db.W017"),
        ({"CHECK_INTERVAL": -1}, "resilient_db.E004"),
        ({"BOGUS": 1}, "resilient_db.E003"),
    ],
)
def test_inconsistent_resilient_db(rdb: dict[str, Any], expected: str) -> None:
    with db_settings(DATABASES=DBS, RESILIENT_DB=rdb):
        messages = run_all()
    found = [m for m in messages if m.id == expected]
    assert found, [m.id for m in messages]
    for m in found:
        # Each message names the key it is about and says how to fix it.
        assert m.obj and isinstance(m.obj, str)
        assert m.hint
        assert "RESILIENT_DB" in m.msg or "DATABASES" in m.msg or "'" in m.msg


def test_peers_with_a_pool_are_not_a_warning() -> None:
    # W018 said the pool ignored PEERS; each target now has a pool of its own.
    pooled = {**DBS, "default": {**DBS["default"], "OPTIONS": {"pool": {"max_size": 4}}}}
    peers = {"DATABASES": {"default": {"PEERS": [{"HOST": "pg-b"}]}}}
    with db_settings(DATABASES=pooled, RESILIENT_DB=peers):
        assert "resilient_db.W018" not in {m.id for m in run_all()}


def test_router_without_replicas() -> None:
    assert "resilient_db.W012" in ids(
        DATABASE_ROUTERS=["resilient_db.routers.ReplicaRouter"], RESILIENT_DB={}
    )


def test_router_with_replicas_is_fine() -> None:
    assert "resilient_db.W012" not in ids(DATABASE_ROUTERS=["resilient_db.routers.ReplicaRouter"])


def test_pinning_middleware_without_pinning_router() -> None:
    found = ids(
        MIDDLEWARE=["resilient_db.middleware.PinningMiddleware"],
        DATABASE_ROUTERS=["resilient_db.routers.ReplicaRouter"],
    )
    assert "resilient_db.E017" in found
    assert "resilient_db.E017" not in ids(
        MIDDLEWARE=["resilient_db.middleware.PinningMiddleware"],
        DATABASE_ROUTERS=["resilient_db.routers.PinningReplicaRouter"],
    )


def test_router_given_as_an_object() -> None:
    class Router:
        pass

    # An object router that is not ours: no W012, and no crash.
    assert "resilient_db.W012" not in ids(DATABASE_ROUTERS=[Router()], RESILIENT_DB={})


@pytest.mark.parametrize(
    "overrides",
    [
        {"REPLICA_DATABASES": ["replica"]},
        {"SLAVE_DATABASES": ["replica"]},
        {"MULTIDB_PINNING_SECONDS": 15},
        {"MULTIDB_PINNING_SOMETHING_NEW": 1},
        {"REPLICATED_DATABASE_SLAVES": ["replica"]},
    ],
)
def test_leftover_settings(overrides: dict[str, Any]) -> None:
    assert "resilient_db.W013" in ids(**overrides)


def test_leftover_proxysql_peers_in_databases() -> None:
    dbs = {**DBS, "default": {**DBS["default"], "PEERS": ["other"], "CHECK_INTERVAL": 30}}
    with db_settings(DATABASES=dbs, RESILIENT_DB={}):
        messages = [m for m in run_all() if m.id == "resilient_db.W013"]
    assert len(messages) == 2
    assert "PEERS" in messages[0].msg and "django-proxysql" in messages[0].msg


def test_predecessor_router_and_middleware() -> None:
    found = ids(
        DATABASE_ROUTERS=["multidb.PinningReplicaRouter"],
        MIDDLEWARE=["multidb.middleware.PinningRouterMiddleware"],
    )
    assert found.count("resilient_db.W014") == 2


def test_every_id_has_a_docs_heading() -> None:
    pkg = Path(rdb_checks.__file__).parent
    source = "".join(p.read_text(encoding="utf-8") for p in sorted(pkg.rglob("*.py")))
    emitted = set(re.findall(r"resilient_db\.[EW]\d{3}", source))
    docs = DOCS.read_text(encoding="utf-8")
    headings = set(re.findall(r"^#+ .*?(resilient_db\.[EW]\d{3})", docs, re.M))
    assert emitted
    assert emitted <= headings, sorted(emitted - headings)


# Random shapes of RESILIENT_DB: whatever a user writes, the result is check
# messages, never a traceback.
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=100),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["default", "replica", "other", "postgres://h:1/db", "mysql://", "x://y"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(
                st.sampled_from(
                    ["HOST", "PORT", "NAME", "PRIORITY", "PEERS", "REPLICAS", "ROLE",
                     "MAX_REPLICA_LAG", "MAX_REPLICA_LAG_BYTES", "POLICY", "SECONDS", "STORE"]
                ),
                st.text(max_size=5),
            ),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=20,
)
_alias_cfg = st.one_of(
    _values,
    st.fixed_dictionaries(
        {},
        optional={
            "PEERS": _values,
            "REPLICAS": st.one_of(_values, st.lists(st.sampled_from(list(DBS) + ["ghost"]))),
            "MAX_REPLICA_LAG": _values,
            "ROLE": st.one_of(_values, st.sampled_from(["primary", "replica"])),
            "POLICY": _values,
        },
    ),
)
_rdb = st.one_of(
    _values,
    st.fixed_dictionaries(
        {},
        optional={
            "DATABASES": st.one_of(
                _values,
                st.dictionaries(
                    st.sampled_from(list(DBS) + ["ghost"]), _alias_cfg, max_size=4
                ),
            ),
            "CHECK_INTERVAL": _values,
            "MAX_CHECK_INTERVAL": _values,
            "CONNECT_TIMEOUT": _values,
            "RETRY": _values,
            "REPLICA_POLICY": _values,
            "STICKY_REPLICA": _values,
            "PINNING": _values,
            "REGISTRY": _values,
            "HEALTH": _values,
            "ERROR_CODES": _values,
        },
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rdb=_rdb)
def test_random_shapes_never_raise(rdb: Any) -> None:
    with db_settings(DATABASES=DBS, RESILIENT_DB=rdb), raw_settings(
        DATABASE_ROUTERS=["resilient_db.routers.PinningReplicaRouter"],
        MIDDLEWARE=["resilient_db.middleware.PinningMiddleware"],
    ):
        messages = run_all()
    for m in messages:
        assert isinstance(m, checks.CheckMessage)
        assert m.id and m.id.startswith("resilient_db.")
        assert m.hint
