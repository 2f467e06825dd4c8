"""Settings for running Django's own test suite against the test bed.

One module for every run of the gate; the environment chooses:

* ``RDB_SUITE_VENDOR``: ``postgresql`` or ``mysql``;
* ``RDB_SUITE_ENGINE``: ``stock`` (Django's engine) or ``ours`` (the resilient one);
* ``RDB_SUITE_FEATURES``: ``1`` to turn the resilience features on (with ``ours``);
* ``RDB_SUITE_RUN``: a short name making the test databases of this run unique.
"""

from __future__ import annotations

import os

from resilient_db_testbed.bed import config

_bed = config()
_vendor = os.environ.get("RDB_SUITE_VENDOR", "postgresql")
_engine = os.environ.get("RDB_SUITE_ENGINE", "stock")
_run = os.environ.get("RDB_SUITE_RUN", _engine)
_prefix = "django.db.backends" if _engine == "stock" else "resilient_db.backends"


def _database(name: str) -> dict[str, object]:
    if _vendor == "postgresql":
        return {
            "ENGINE": f"{_prefix}.postgresql",
            "HOST": _bed.host,
            "PORT": _bed.pg_primary_port,
            # Django's postgres_tests create extensions: the bed's superuser.
            "USER": _bed.pg_admin_user,
            "PASSWORD": _bed.pg_admin_password,
            "NAME": _bed.pg_db,
            "TEST": {"NAME": f"test_suite_{_run}_{name}"},
        }
    return {
        "ENGINE": f"{_prefix}.mysql",
        "HOST": _bed.host,
        "PORT": _bed.maria_primary_port,
        "USER": _bed.maria_admin_user,
        "PASSWORD": _bed.maria_admin_password,
        "NAME": _bed.maria_db,
        # Kept out of the binary log: the suite's DDL is of no use to the
        # bed's replica, and a statement the replica cannot apply would stop
        # replication for the tests that run after the gate. (That is also
        # why the gate runs the MySQL suite in one process: see gate.SERIAL.)
        "OPTIONS": {"init_command": "SET SESSION sql_log_bin = 0"},
        "TEST": {
            "NAME": f"test_suite_{_run}_{name}",
            "CHARSET": "utf8mb4",
            "COLLATION": "utf8mb4_unicode_ci",
        },
    }


DATABASES = {"default": _database("default"), "other": _database("other")}

SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
TEST_RUNNER = "suite_runner.RecordingRunner"

if _engine != "stock" and os.environ.get("RDB_SUITE_FEATURES") == "1":
    # Every feature that acts on the normal path of a statement or a
    # connection, tuned so that it acts often: a healthy server must see no
    # difference at all.
    RESILIENT_DB = {
        "DATABASES": {
            "default": {"ROLE": "primary"},
            "other": {"ROLE": "primary"},
        },
        "STALL_TIMEOUT": 30.0,
        "CHECK_INTERVAL": 0.5,
        "MAX_CHECK_INTERVAL": 2.0,
        "CONNECT_TIMEOUT": 5.0,
        "RETRY": {"READS": 2, "DEADLINE": 10.0, "BACKOFF": 0.05},
        "HEALTH": {"IDLE_PING_AFTER": 0.0},
    }
