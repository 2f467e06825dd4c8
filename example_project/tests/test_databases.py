"""Where the settings take the databases from: environment, test bed, SQLite."""

from __future__ import annotations

import environ
import pytest

from shop import databases


def _env(monkeypatch: pytest.MonkeyPatch, **values: str) -> environ.Env:
    for name in ("DATABASE_URL", "DATABASE_PEERS", "DATABASE_REPLICAS", "SHOP_DB"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return environ.Env()


def test_urls_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env(
        monkeypatch,
        DATABASE_URL="postgres://app:pw@db-a.internal:6432/shop",
        DATABASE_PEERS="postgres://app:pw@db-b.internal:6432/shop, postgres://app:pw@db-c.internal:6432/shop",
        DATABASE_REPLICAS="postgres://app:pw@replica-1.internal/shop,postgres://app:pw@replica-2.internal/shop",
    )
    plan = databases.plan(env)
    assert plan.source == "env"
    default = plan.databases["default"]
    assert default["ENGINE"] == "resilient_db.backends.postgresql"
    assert (default["HOST"], default["PORT"], default["NAME"]) == ("db-a.internal", 6432, "shop")
    assert plan.replicas == ["replica", "replica_2"]
    assert plan.databases["replica_2"]["HOST"] == "replica-2.internal"
    assert plan.databases["replica"]["TEST"] == {"MIRROR": "default"}
    assert plan.peers == [
        "postgres://app:pw@db-b.internal:6432/shop",
        "postgres://app:pw@db-c.internal:6432/shop",
    ]


def test_mysql_url_gets_the_resilient_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = databases.plan(_env(monkeypatch, DATABASE_URL="mysql://app:pw@127.0.0.1:3306/shop"))
    assert plan.databases["default"]["ENGINE"] == "resilient_db.backends.mysql"


def test_sqlite_when_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = databases.plan(_env(monkeypatch, SHOP_DB="sqlite"))
    assert plan.source == "sqlite"
    assert plan.databases["default"]["ENGINE"] == "resilient_db.backends.sqlite3"
    assert plan.peers == [] and plan.replicas == []


def test_bed_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT_DB_BED_PORT_BASE", "300")
    plan = databases.plan(_env(monkeypatch, SHOP_DB="bed"))
    assert plan.source == "bed"
    assert plan.databases["default"]["PORT"] == "26732"  # PgBouncer A
    assert plan.databases["replica"]["PORT"] == "25733"
    assert plan.peers == [{"HOST": "127.0.0.1", "PORT": "26733"}]  # PgBouncer B


def test_bad_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="SHOP_DB"):
        databases.plan(_env(monkeypatch, SHOP_DB="oracle"))


def test_stock_swaps_engines_back() -> None:
    dbs = {"default": {"ENGINE": "resilient_db.backends.postgresql", "HOST": "h"}}
    databases.finish(dbs, stock=True, conn_max_age=60, connect_timeout=1)
    assert dbs["default"]["ENGINE"] == "django.db.backends.postgresql"
    assert dbs["default"]["OPTIONS"] == {"connect_timeout": 1}
    assert dbs["default"]["CONN_HEALTH_CHECKS"] is True
