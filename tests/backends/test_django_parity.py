"""Our engines behave exactly as Django's own where Django decides (DESIGN rule 12).

Each test here reproduces a difference Django's own test suite found when run
with our engines (``nox -s django_suite``), against the real bed.
"""

from __future__ import annotations

import pytest
from django.db import connections, transaction
from django.db.transaction import TransactionManagementError

from resilient_db.exceptions import ConnectionLost
from tests.backends.support import adhoc_alias, maria_connection_id, persistent, pg_backend_pid
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "mysql"])


def _session_id(alias: str) -> int:
    return pg_backend_pid(alias) if alias == "default" else maria_connection_id(alias)


@pytest.fixture
def kill_session(request: pytest.FixtureRequest):
    """Return a function that kills ``alias``'s current server session."""

    def kill(alias: str) -> None:
        if alias == "default":
            request.getfixturevalue("pg_terminate")(pg_backend_pid(alias))
        else:
            request.getfixturevalue("maria_kill")(maria_connection_id(alias))

    return kill


@pytest.mark.parametrize("alias", ["default", "mysql"])
def test_a_django_error_after_an_earlier_lost_connection_is_not_a_lost_connection(
    alias, kill_session
):
    # Django keeps the error of the lost connection in connection.rollback_exc
    # and raises TransactionManagementError "from" it in a later, healthy
    # transaction: that chained history must not make it a lost connection.
    objects = Item.objects.using(alias)
    with persistent(alias):
        with pytest.raises(ConnectionLost), transaction.atomic(using=alias):
            objects.count()
            kill_session(alias)
            # A write: Django's mark_for_rollback_on_error keeps its error.
            objects.create(key="lost")
        assert isinstance(connections[alias].rollback_exc, ConnectionLost)
        session = _session_id(alias)
        with transaction.atomic(using=alias):
            objects.count()
            transaction.set_rollback(True, using=alias)
            with pytest.raises(TransactionManagementError) as raised:
                objects.count()
            assert not isinstance(raised.value, ConnectionLost)
        # Stock Django keeps the session; so do we.
        assert connections[alias].connection is not None
        assert _session_id(alias) == session


@pytest.mark.parametrize("alias", ["default", "mysql"])
@pytest.mark.parametrize("override", [{"PASSWORD": "not-the-password"}, {"NAME": "no_such_db"}])
def test_a_wrong_password_or_database_is_the_drivers_error_at_once(alias, override):
    from django.db import OperationalError

    from resilient_db.backends.alias_targets import targets_of
    from resilient_db.exceptions import AllTargetsDown
    from resilient_db.health.records import State
    from resilient_db.health.registry import get_registry

    with adhoc_alias("misconfigured", alias, **override) as wrapper:
        with pytest.raises(OperationalError) as raised:
            wrapper.ensure_connection()
        # Django's translation of the driver's own error, as stock raises it.
        assert not isinstance(raised.value, AllTargetsDown)
        assert type(raised.value.__cause__).__module__.split(".")[0] in {"psycopg", "psycopg2", "MySQLdb"}
        # A configuration error is not an outage: nothing is marked down.
        for target in targets_of(wrapper):
            health = get_registry().health(target)
            assert health.state is State.UP
            assert health.failures == 0
    # The server itself is fine for the alias that is configured right.
    assert Item.objects.using(alias).count() == 0


@pytest.mark.parametrize(("idle_ping_after", "pings"), [(0.0, 3), (30.0, 0)])
def test_idle_ping_after_zero_checks_before_every_use(idle_ping_after, pings, monkeypatch):
    # docs/settings.md: "0 checks before every use"; it used to turn the check off.
    from tests.backends.support import resilient_settings

    wrapper = connections["default"]
    calls = []
    # The resilience ping, not is_usable(), which belongs to CONN_HEALTH_CHECKS.
    real = type(wrapper.resilience).ping

    def counting(self):
        calls.append(self.db.alias)
        return real(self)

    with resilient_settings(_top={"HEALTH": {"IDLE_PING_AFTER": idle_ping_after}}), persistent(
        "default"
    ):
        Item.objects.count()  # connects
        monkeypatch.setattr(type(wrapper.resilience), "ping", counting)
        for _ in range(3):
            Item.objects.count()
    assert calls.count("default") == pings


def test_a_connection_found_closed_when_creating_a_cursor_in_atomic_is_connection_lost():
    # The driver connection goes away under Django inside atomic(): creating
    # the next cursor fails in the driver (psycopg 3 OperationalError,
    # psycopg2 InterfaceError), which must surface as ConnectionLost; the
    # next use after the block reconnects and says so.
    from resilient_db.backends.transactions import retry_atomic
    from tests.backends.support import capture_signals

    wrapper = connections["default"]
    with persistent("default"), capture_signals() as seen:
        with pytest.raises(ConnectionLost), transaction.atomic():
            Item.objects.create(key="gone")
            wrapper.connection.close()
            Item.objects.create(key="after")
        assert Item.objects.count() == 0
        assert [e["reason"] for e in seen["reconnected"]] == ["connection_lost"]

        runs = []
        for attempt in retry_atomic():
            with attempt:
                runs.append(attempt.number)
                Item.objects.create(key=f"run{len(runs)}")
                if len(runs) == 1:
                    wrapper.connection.close()
                    Item.objects.count()
    assert len(runs) == 2
    assert list(Item.objects.values_list("key", flat=True)) == ["run2"]
