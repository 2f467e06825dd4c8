"""A password given to this app never appears in an error report, log, signal or dbhealth.

Error reports are produced by Django's own ``ExceptionReporter`` (the DEBUG
500 page) and ``AdminEmailHandler`` (the admin e-mail), as a project would.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from collections.abc import Callable, Iterator
from io import StringIO
from typing import Any

import django
import pytest
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.test import Client, RequestFactory, override_settings
from django.utils.log import AdminEmailHandler
from django.views.debug import ExceptionReporter, get_default_exception_reporter_filter

from resilient_db import checks as rdb_checks
from resilient_db import signals
from resilient_db.exceptions import AllTargetsDown
from resilient_db.health.registry import get_registry
from resilient_db_testbed.bed_config import BedConfig
from tests.backends.support import adhoc_alias

URL_PW = "S3cretUrlPw"
DICT_PW = "S3cretDictPw"
OURS = "resilient_db.debug.SafeExceptionReporterFilter"
DJANGOS = "django.views.debug.SafeExceptionReporterFilter"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def url_peer(port: int) -> str:
    return f"postgres://app:{URL_PW}@127.0.0.1:{port}/app"


def dict_peer(port: int) -> dict[str, Any]:
    return {"HOST": "127.0.0.1", "PORT": port, "USER": "app", "PASSWORD": DICT_PW}


@pytest.fixture(autouse=True)
def fresh_filter() -> Iterator[None]:
    # Django caches the filter instance; each test names its own.
    get_default_exception_reporter_filter.cache_clear()
    get_registry().reset()
    yield
    get_default_exception_reporter_filter.cache_clear()
    get_registry().reset()


def rdb_with(*peers: object, alias: str = "bouncers") -> dict[str, Any]:
    from django.conf import settings

    base = {**settings.RESILIENT_DB, "DATABASES": {**settings.RESILIENT_DB["DATABASES"]}}
    base["DATABASES"][alias] = {"PEERS": list(peers)}
    return base


def fail_with_a_dsn() -> None:
    dsn = f"postgres://app:{URL_PW}@db-b:6432/app"  # a local holding a URL with a password
    raise ValueError(f"boom near {dsn.split('@')[1]}")


def report(fail: Callable[[], None]) -> tuple[str, str]:
    """Return the DEBUG page (HTML) and its text version for what ``fail`` raises."""
    request = RequestFactory().get("/orders/")
    try:
        fail()
    except Exception:  # noqa: BLE001 - the report is what is tested
        reporter = ExceptionReporter(request, *sys.exc_info())
    return reporter.get_traceback_html(), reporter.get_traceback_text()


# ----- the DEBUG page -------------------------------------------------------


def test_djangos_own_filter_prints_a_url_password_and_w021_says_so() -> None:
    # Why the app ships a filter: Django masks keys that look secret, not URLs.
    with override_settings(
        DEBUG=True, DEFAULT_EXCEPTION_REPORTER_FILTER=DJANGOS, RESILIENT_DB=rdb_with(url_peer(1))
    ):
        html, _text = report(fail_with_a_dsn)
        (warning,) = rdb_checks.check_error_reports()
    assert URL_PW in html
    assert warning.id == "resilient_db.W021"
    assert OURS in (warning.hint or "")
    assert URL_PW not in warning.msg


@pytest.mark.parametrize("debug", [True, False])
def test_debug_page_masks_url_passwords_in_settings_and_frames(debug: bool) -> None:
    from django.conf import settings

    caches = {**settings.CACHES, "urls": {"BACKEND": "x", "LOCATION": f"redis://:{URL_PW}@r:6379/0"}}
    with override_settings(
        DEBUG=debug, DEFAULT_EXCEPTION_REPORTER_FILTER=OURS,
        RESILIENT_DB=rdb_with(url_peer(1), dict_peer(2)), CACHES=caches,
    ):
        html, text = report(fail_with_a_dsn)
        assert rdb_checks.check_error_reports() == []
    for page in (html, text):
        assert URL_PW not in page
        assert DICT_PW not in page
        assert "RESILIENT_DB" in page  # the settings are still shown, masked
    assert "app:********@127.0.0.1" in text
    assert "redis://:********@r:6379/0" in text  # any setting, not only RESILIENT_DB


def test_dict_passwords_need_no_filter_and_no_warning() -> None:
    with override_settings(DEFAULT_EXCEPTION_REPORTER_FILTER=DJANGOS,
                           RESILIENT_DB=rdb_with(dict_peer(2))):
        assert rdb_checks.check_error_reports() == []


# ----- the admin e-mail -----------------------------------------------------

# Django 6.0 takes plain addresses and deprecates the (name, address) pairs
# that Django 5.2 requires.
ADMINS: list[Any] = (
    ["ops@example.com"] if django.VERSION >= (6, 0) else [("Ops", "ops@example.com")]
)


# Django 6.1 warns that a project without MAILERS will not send mail in Django
# 2028; the test reads the locmem outbox the test runner installs either way.
@pytest.mark.filterwarnings("ignore:Django 2028 will not have a default mailer")
def test_admin_email_masks_url_passwords(mailoutbox: list[Any]) -> None:
    handler = AdminEmailHandler(include_html=True)
    with override_settings(
        DEBUG=False, ADMINS=ADMINS, DEFAULT_EXCEPTION_REPORTER_FILTER=OURS,
        RESILIENT_DB=rdb_with(url_peer(1), dict_peer(2)),
    ):
        try:
            fail_with_a_dsn()
        except ValueError:
            record = logging.LogRecord(
                "django.request", logging.ERROR, __file__, 1, "Internal Server Error: %s",
                ("/orders/",), sys.exc_info(),
            )
        record.request = RequestFactory().get("/orders/")
        handler.emit(record)
    (message,) = mail.outbox
    html = message.alternatives[0][0]
    assert "RESILIENT_DB" in message.body and "RESILIENT_DB" in html
    for part in (message.subject, message.body, html):
        assert URL_PW not in part
        assert DICT_PW not in part


# ----- a real failure: every target down ------------------------------------


def _all_targets_down(alias: str) -> Callable[[], None]:
    def fail() -> None:
        connections[alias].ensure_connection()

    return fail


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("reporter_filter", "debug", "peers"),
    [
        # With the app's filter: every form, DEBUG page and e-mail frames.
        (OURS, True, "both"),
        (OURS, False, "both"),
        # With Django's filter and passwords only in dicts (no W021): the
        # app's own objects (settings, targets, the set of secrets) hide them.
        (DJANGOS, False, "dict"),
    ],
)
def test_all_targets_down_report_shows_no_password(
    bed: BedConfig, django_db_blocker: Any, reporter_filter: str, debug: bool, peers: str
) -> None:
    dead = closed_port()
    listed: list[object] = [dict_peer(closed_port())]
    if peers == "both":
        listed.insert(0, url_peer(closed_port()))
    with django_db_blocker.unblock(), adhoc_alias(
        "leaky", "default", HOST="127.0.0.1", PORT=str(dead), PASSWORD=DICT_PW + "Own"
    ), override_settings(
        DEBUG=debug, DEFAULT_EXCEPTION_REPORTER_FILTER=reporter_filter,
        RESILIENT_DB=rdb_with(*listed, alias="leaky")
        | {"RETRY": {"DEADLINE": 0.5}, "CONNECT_TIMEOUT": 0.5},
    ):
        html, text = report(_all_targets_down("leaky"))
    assert "AllTargetsDown" in text
    for page in (html, text):
        assert URL_PW not in page
        assert DICT_PW not in page  # the peer's, and the alias's own (DICT_PW + "Own")


# ----- logs, signals, dbhealth, the health endpoint ----------------------------


@pytest.mark.postgres
def test_logs_signals_dbhealth_and_endpoint_mask_peer_passwords(
    bed: BedConfig, django_db_blocker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    payloads: list[dict[str, Any]] = []

    def record(sender: Any, **kwargs: Any) -> None:
        kwargs.pop("signal", None)
        payloads.append(kwargs)

    names = ("target_down", "target_up", "failover", "reconnected", "primary_fallback")
    for name in names:
        getattr(signals, name).connect(record, weak=False, dispatch_uid=f"secrets-{name}")
    outputs: list[str] = []
    try:
        rdb = rdb_with(url_peer(closed_port()), dict_peer(closed_port()))
        rdb["HEALTH"] = {"SHOW_HOSTS": True, "PROBE_TIMEOUT": 1.0}
        with caplog.at_level(logging.DEBUG, logger="resilient_db"), override_settings(
            RESILIENT_DB=rdb
        ):
            for args in (["--json"], []):
                out, err = StringIO(), StringIO()
                try:
                    call_command("dbhealth", "--database", "bouncers", *args, stdout=out, stderr=err)
                except CommandError as exc:
                    err.write(str(exc))
                outputs += [out.getvalue(), err.getvalue()]
            outputs.append(Client().get("/health/db/").content.decode())
            # A failover path too: own server and both peers down.
            with django_db_blocker.unblock(), adhoc_alias(
                "leaky", "default", HOST="127.0.0.1", PORT=str(closed_port())
            ), override_settings(
                RESILIENT_DB=rdb_with(url_peer(closed_port()), dict_peer(closed_port()),
                                      alias="leaky") | {"RETRY": {"DEADLINE": 0.5}}
            ):
                with pytest.raises(AllTargetsDown) as info:
                    connections["leaky"].ensure_connection()
                outputs.append(str(info.value))
    finally:
        for name in names:
            getattr(signals, name).disconnect(dispatch_uid=f"secrets-{name}")
    data = json.loads(outputs[0])
    assert len(data["targets"]) == 3  # pgbouncer_a and both peers were probed
    assert any(p.get("target") or p.get("from_target") for p in payloads)
    everything = "\n".join(
        [*outputs, caplog.text, *(repr(p) for p in payloads),
         *(r.getMessage() for r in caplog.records)]
    )
    assert "127.0.0.1" in everything  # the peers were really shown and probed
    assert URL_PW not in everything
    assert DICT_PW not in everything
