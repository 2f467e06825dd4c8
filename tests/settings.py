"""Settings for the test suite: every alias points at the project's test bed."""

from __future__ import annotations

import os
from typing import Any

from resilient_db_testbed.bed import config

BED = config()
H = BED.host

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "resilient_db",
    "tests.testapp",
]

MIDDLEWARE: list[str] = []


def _pg(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "ENGINE": "resilient_db.backends.postgresql",
        "HOST": H,
        "PORT": str(port),
        "NAME": BED.pg_db,
        "USER": BED.pg_user,
        "PASSWORD": BED.pg_password,
        "OPTIONS": {"connect_timeout": 2},
        **extra,
    }


def _maria(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "ENGINE": "resilient_db.backends.mysql",
        "HOST": H,
        "PORT": str(port),
        "NAME": BED.maria_db,
        "USER": BED.maria_user,
        "PASSWORD": BED.maria_password,
        "OPTIONS": {"connect_timeout": 2, "charset": "utf8mb4"},
        **extra,
    }


# default and mysql get real test databases (test_rdb); every other alias
# mirrors one of them, so replicas see the test data through real replication
# and peers reach the same database through PgBouncer or the TCP peers.
DATABASES: dict[str, dict[str, Any]] = {
    "default": _pg(BED.pg_primary_port),
    "replica": _pg(BED.pg_replica_port, TEST={"MIRROR": "default"}),
    "bouncers": _pg(BED.pgbouncer_a_port, TEST={"MIRROR": "default"}),
    "mysql": _maria(BED.maria_primary_port),
    "mysql_replica": _maria(BED.maria_replica_port, TEST={"MIRROR": "mysql"}),
    "mysql_peers": _maria(BED.maria_peer_a_port, TEST={"MIRROR": "mysql"}),
    "sqlite": {"ENGINE": "resilient_db.backends.sqlite3", "NAME": ":memory:"},
}

RESILIENT_DB: dict[str, Any] = {
    "DATABASES": {
        "default": {"REPLICAS": ["replica"], "MAX_REPLICA_LAG": 5.0},
        "bouncers": {"PEERS": [{"HOST": H, "PORT": str(BED.pgbouncer_b_port)}]},
        "mysql": {"REPLICAS": ["mysql_replica"], "MAX_REPLICA_LAG": 5.0},
        "mysql_peers": {"PEERS": [{"HOST": H, "PORT": str(BED.maria_peer_b_port)}]},
    },
    "CHECK_INTERVAL": 1.0,
    "MAX_CHECK_INTERVAL": 8.0,
    "CONNECT_TIMEOUT": 1.0,
    "RETRY": {"READS": 2, "DEADLINE": 5.0, "BACKOFF": 0.05},
    "PINNING": {"SECURE": False},
}

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "redis": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"redis://{H}:{BED.redis_port}/1",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {"resilient_db": {"handlers": ["null"], "level": "DEBUG"}},
}

# Tests that run the stock backends side by side set this to compare.
if os.environ.get("RESILIENT_DB_TEST_STOCK"):
    for _alias in DATABASES.values():
        _alias["ENGINE"] = _alias["ENGINE"].replace("resilient_db.backends", "django.db.backends")
