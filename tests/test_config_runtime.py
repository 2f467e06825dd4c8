"""A configuration the checks reject is rejected the same way at every entry point.

``manage.py dbhealth`` exits 3 with the check messages; run-time code raises
one ``ImproperlyConfigured`` naming the check id and hint, never a
``ConnectionDoesNotExist`` or ``KeyError`` from inside the package.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.test import override_settings

from resilient_db import checks as rdb_checks
from resilient_db.conf import get_settings
from resilient_db.health.targets import targets_for
from tests.testapp.models import Item

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def rdb(value: Any, **more: Any) -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Overriding setting DATABASES", UserWarning)
        with override_settings(RESILIENT_DB=value, **more):
            yield


def dbhealth(*args: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("dbhealth", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), err.getvalue() + str(exc)
    return 0, out.getvalue(), err.getvalue()


# ----- dbhealth: exit 3 with the check messages ------------------------------


@pytest.mark.parametrize(
    ("value", "check_id"),
    [
        ({"CHECK_INTERVAL": -1}, "resilient_db.E004"),
        ({"DATABASES": {"default": {"REPLICAS": ["replcia"]}}}, "resilient_db.E013"),
        ({"DATABASES": {"defualt": {"REPLICAS": ["replica"]}}}, "resilient_db.E012"),
        ({"DATABASES": {"bouncers": {"PEERS": ["pgbouncer-b:6432"]}}}, "resilient_db.E013"),
    ],
)
def test_dbhealth_misconfigured_exits_3_with_the_check_messages(
    value: dict[str, Any], check_id: str
) -> None:
    with rdb(value):
        code, out, err = dbhealth("--timeout", "1")
    assert code == 3, (out, err)
    assert check_id in err
    assert "HINT:" in err
    assert "misconfigured" in err
    assert out == ""  # nothing was probed


def test_dbhealth_misconfigured_as_a_process_prints_no_traceback() -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_misconfigured",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "django", "dbhealth", "--timeout", "1"],
        capture_output=True, text=True, timeout=60, env=env, cwd=ROOT, check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "(resilient_db.E013)" in proc.stderr
    assert "'replcia'" in proc.stderr
    assert "HINT: Add a DATABASES entry for 'replcia'" in proc.stderr


# ----- run time: the same errors, one ImproperlyConfigured ------------------


@pytest.mark.django_db(databases=["default", "replica"])
def test_unknown_replica_alias_stops_a_query_with_the_check_message(settings: Any) -> None:
    settings.DATABASE_ROUTERS = ["resilient_db.routers.PinningReplicaRouter"]
    with (
        rdb({"DATABASES": {"default": {"REPLICAS": ["replcia"]}}}),
        pytest.raises(ImproperlyConfigured) as info,
    ):
        Item.objects.count()
    text = str(info.value)
    assert "resilient_db.E013" in text
    assert "'replcia'" in text
    assert "HINT: Add a DATABASES entry for 'replcia'" in text


@pytest.mark.django_db(databases=["default", "replica"])
def test_misspelled_alias_key_stops_a_replica_connection_with_the_check_message() -> None:
    with rdb({"DATABASES": {"defualt": {"REPLICAS": ["replica"]}}}):
        conn = connections.create_connection("replica")
        try:
            with pytest.raises(ImproperlyConfigured, match=r"resilient_db\.E012.*'defualt'"):
                conn.ensure_connection()
        finally:
            conn.close()


def test_peer_without_a_scheme_is_an_error_not_dropped() -> None:
    value = {"DATABASES": {"bouncers": {"PEERS": ["pgbouncer-b:6432"]}}}
    with rdb(value):
        messages = rdb_checks.check_consistency()
        with pytest.raises(ImproperlyConfigured) as info:
            targets_for("bouncers")
    (message,) = messages
    assert message.id == "resilient_db.E013"
    assert "without a scheme" in message.msg
    assert "'postgres://pgbouncer-b:6432'" in (message.hint or "")
    # The run-time guard words it exactly as the check does.
    assert message.msg in str(info.value)
    assert (message.hint or "") in str(info.value)


def test_warnings_do_not_stop_run_time() -> None:
    # W015: MAX_REPLICA_LAG without REPLICAS is a warning only.
    with rdb({"DATABASES": {"replica": {"MAX_REPLICA_LAG": 5.0}}}):
        assert get_settings().alias("replica").max_replica_lag == 5.0


def test_missing_registry_cache_is_the_check_error_at_run_time() -> None:
    from resilient_db.health.registry import get_registry

    with (
        rdb({"REGISTRY": {"STORE": "cache", "CACHE": "nope"}}),
        pytest.raises(ImproperlyConfigured, match=r"resilient_db\.E020"),
    ):
        get_registry()


@pytest.mark.parametrize(
    ("option", "value"),
    [("--timeout", "1e10"), ("--timeout", "61"), ("--watch", "1e12"), ("--timeout", "nan")],
)
def test_dbhealth_refuses_out_of_range_seconds(option: str, value: str) -> None:
    # 1e10 as --timeout raised OverflowError from a lock wait, after probing.
    with pytest.raises(CommandError, match=f"argument {option}"):
        call_command("dbhealth", option, value, stdout=StringIO(), stderr=StringIO())
