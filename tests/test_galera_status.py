"""Which Galera status makes a node unfit for queries (pure logic; the real cluster is in tests/ha)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_db.health.error_codes import not_run
from resilient_db.vendors.mysql import galera_problem

SYNCED = {
    "wsrep_provider_name": "Galera",
    "wsrep_ready": "ON",
    "wsrep_cluster_status": "Primary",
    "wsrep_local_state": "4",
    "wsrep_local_state_comment": "Synced",
}


def test_a_synced_primary_node_is_fit() -> None:
    assert galera_problem(SYNCED) is None


def test_a_server_without_galera_is_never_judged() -> None:
    # What an ordinary MariaDB answers (the bed's primary): no provider.
    plain = {"wsrep_provider_name": "", "wsrep_ready": "OFF", "wsrep_cluster_status": "Disconnected"}
    assert galera_problem(plain) is None
    assert galera_problem({}) is None  # MySQL: no wsrep variables at all


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"wsrep_ready": "OFF"}, "wsrep_ready is OFF"),
        ({"wsrep_cluster_status": "non-Primary"}, "cluster status non-Primary"),
        ({"wsrep_local_state": "2", "wsrep_local_state_comment": "Donor/Desynced"}, "Donor/Desynced"),
        ({"wsrep_local_state": "1", "wsrep_local_state_comment": "Joining"}, "Joining"),
    ],
)
def test_each_unfit_state_is_named(change: dict[str, str], said: str) -> None:
    problem = galera_problem({**SYNCED, **change})
    assert problem is not None
    assert said in problem


@given(
    ready=st.sampled_from(["ON", "OFF", ""]),
    status=st.sampled_from(["Primary", "non-Primary", "Disconnected", ""]),
    state=st.sampled_from(["0", "1", "2", "3", "4", "5", ""]),
)
def test_fit_exactly_when_ready_primary_and_synced(ready: str, status: str, state: str) -> None:
    found = galera_problem(
        {"wsrep_provider_name": "Galera", "wsrep_ready": ready, "wsrep_cluster_status": status,
         "wsrep_local_state": state}
    )
    assert (found is None) == (ready == "ON" and status == "Primary" and state == "4")


def test_only_galera_refusals_count_as_not_run() -> None:
    class Err(Exception):
        pass

    assert not_run(Err(1047, "WSREP has not yet prepared node for application use"))
    assert not_run(Err(1180, "Error ... (provider status: Not connected to Primary Component)"))
    assert not not_run(Err(1047, "Unknown command"))
    assert not not_run(Err(1180, "Got error 28 during COMMIT"))
    assert not not_run(Err(2013, "Lost connection to server during query"))
    wrapped = Err("django's copy")
    wrapped.__cause__ = Err(1047, "WSREP has not yet prepared node for application use")
    assert not_run(wrapped)
