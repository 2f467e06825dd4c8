"""PinningMiddleware: the signed cookie, without touching a database."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from unittest import mock

import pytest
from asgiref.sync import async_to_sync
from django.core import signing
from django.test import AsyncClient, Client
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from resilient_db.routers import context
from resilient_db.routers.pins import dumps_pin, loads_pin, merge_pins, parse_lsn

MIDDLEWARE = ["resilient_db.middleware.PinningMiddleware"]
SALT = "resilient_db.pinning"


@pytest.fixture(autouse=True)
def _pinning_settings(settings: Any) -> Any:
    settings.MIDDLEWARE = MIDDLEWARE
    settings.DATABASE_ROUTERS = ["resilient_db.routers.PinningReplicaRouter"]
    with context.isolated():
        yield settings


def pins_of(client: Client, **cookies: str) -> dict[str, Any]:
    for k, v in cookies.items():
        client.cookies[k] = v
    return json.loads(client.get("/routing/pins/").content)["pins"]  # type: ignore[no-any-return]


def test_post_that_writes_nothing_sets_no_cookie(client: Client) -> None:
    response = client.post("/routing/nothing/")
    assert response.status_code == 200
    assert "rdb_pin" not in response.cookies


def test_get_that_writes_sets_a_signed_cookie_that_pins(client: Client) -> None:
    response = client.get("/routing/fake-write/")
    morsel = response.cookies["rdb_pin"]
    assert morsel["max-age"] == 15
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Lax"
    assert morsel["path"] == "/"
    assert not morsel["secure"]  # tests/settings.py turns SECURE off
    assert loads_pin(morsel.value, salt=SALT, max_age=15) == {"default": None}
    assert pins_of(client) == {"default": None}


def test_cookie_attributes_are_configurable(client: Client, settings: Any) -> None:
    settings.RESILIENT_DB = {
        **settings.RESILIENT_DB,
        "PINNING": {
            "COOKIE": "pin",
            "SECONDS": 2.5,
            "SECURE": True,
            "HTTPONLY": False,
            "SAMESITE": "Strict",
            "DOMAIN": ".example.com",
            "PATH": "/app",
            "SALT": "other",
        },
    }
    morsel = client.get("/routing/fake-write/").cookies["pin"]
    assert morsel["max-age"] == 3
    assert morsel["secure"] is True
    assert not morsel["httponly"]
    assert morsel["samesite"] == "Strict"
    assert morsel["domain"] == ".example.com"
    assert morsel["path"] == "/app"
    assert loads_pin(morsel.value, salt="other", max_age=3) == {"default": None}
    assert loads_pin(morsel.value, salt=SALT, max_age=3) == {}


def test_seconds_zero_disables_the_cookie(client: Client, settings: Any) -> None:
    settings.RESILIENT_DB = {**settings.RESILIENT_DB, "PINNING": {"SECONDS": 0}}
    assert "rdb_pin" not in client.get("/routing/fake-write/").cookies


def test_db_write_view_sets_cookie_for_every_group(client: Client) -> None:
    response = client.get("/routing/marked/")
    assert loads_pin(response.cookies["rdb_pin"].value, salt=SALT, max_age=15) == {"*": None}


def test_response_db_write_false_opts_out(client: Client) -> None:
    assert "rdb_pin" not in client.post("/routing/opt-out/").cookies


def test_writes_outside_groups_do_not_pin(client: Client) -> None:
    assert "rdb_pin" not in client.get("/routing/fake-write/?alias=sqlite").cookies


def test_new_write_keeps_the_pins_still_running(client: Client) -> None:
    client.get("/routing/fake-write/?alias=default")
    response = client.get("/routing/fake-write/?alias=mysql")
    pins = loads_pin(response.cookies["rdb_pin"].value, salt=SALT, max_age=15)
    assert pins == {"default": None, "mysql": None}


@pytest.mark.parametrize(
    "value",
    [
        "y",  # django-multidb-router's unsigned cookie
        "garbage:garbage:garbage",
        "",
        "é" * 10,
        "x" * 5000,
        signing.dumps({"w": {"default": None}}, salt="wrong-salt"),
        signing.dumps({"w": {"default": None}}, salt=SALT, key="not-the-secret-key"),
        signing.dumps({"w": "default"}, salt=SALT),
        signing.dumps(["default"], salt=SALT),
        signing.dumps({"w": {"default": "lots"}}, salt=SALT),
        signing.dumps({"w": {"default": True}}, salt=SALT),
        signing.dumps({"w": {"not-an-alias": None}}, salt=SALT),
        signing.dumps({"w": {"default": None}, "t": {"default": 10**30}}, salt=SALT),
        signing.dumps({"w": {"default": None}, "t": {"default": "now"}}, salt=SALT),
        signing.dumps({"w": {"default": None}, "t": {"default": -5}}, salt=SALT),
    ],
)
def test_forged_or_malformed_cookie_is_ignored(client: Client, value: str) -> None:
    client.cookies["rdb_pin"] = value
    response = client.get("/routing/pins/")
    assert response.status_code == 200
    assert json.loads(response.content)["pins"] == {}


def test_tampered_cookie_is_ignored(client: Client) -> None:
    good = dumps_pin({"default": None}, salt=SALT)
    payload, _, rest = good.partition(":")
    for bad in (payload[:-1] + ("A" if payload[-1] != "A" else "B") + ":" + rest, good[:-1] + "x"):
        assert pins_of(client, rdb_pin=bad) == {}
    assert pins_of(client, rdb_pin=good) == {"default": None}


def test_expired_cookie_is_ignored(client: Client) -> None:
    with mock.patch("django.core.signing.time.time", return_value=time.time() - 16):
        old = dumps_pin({"default": None}, salt=SALT)
    assert pins_of(client, rdb_pin=old) == {}
    with mock.patch("django.core.signing.time.time", return_value=time.time() - 10):
        recent = dumps_pin({"default": None}, salt=SALT)
    assert pins_of(client, rdb_pin=recent) == {"default": None}


def test_cookie_signed_with_a_fallback_key_still_pins(client: Client, settings: Any) -> None:
    old = signing.dumps({"w": {"default": None}}, salt=SALT, key="previous-secret", compress=True)
    settings.SECRET_KEY_FALLBACKS = ["previous-secret"]
    assert pins_of(client, rdb_pin=old) == {"default": None}


def test_async_middleware_and_concurrent_requests_are_isolated() -> None:
    async_to_sync(_async_isolation)()


async def _async_isolation() -> None:
    pinned_client, plain_client = AsyncClient(), AsyncClient()
    response = await pinned_client.get("/routing/fake-write/")
    assert "rdb_pin" in response.cookies
    pinned_client.cookies["rdb_pin"] = response.cookies["rdb_pin"].value

    async def pins(c: AsyncClient) -> dict[str, Any]:
        r = await c.get("/routing/pins/")
        return json.loads(r.content)["pins"]  # type: ignore[no-any-return]

    results = await asyncio.gather(*[pins(c) for c in [pinned_client, plain_client] * 10])
    assert results == [{"default": None}, {}] * 10
    response = await plain_client.post("/routing/nothing/")
    assert "rdb_pin" not in response.cookies


def test_lsn_helpers() -> None:
    assert parse_lsn("0/3000148") == 0x3000148
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert parse_lsn("nonsense") is None
    assert merge_pins({"a": 5, "b": None}, {"a": 9, "b": 3, "c": 1}) == {"a": 9, "b": None, "c": 1}
    assert merge_pins({"a": 5}, {"a": None}) == {"a": None}


# ----- each group's pin lasts SECONDS after its own last write ------------------------


class Clock:
    """Wall time for the signing framework and the pins, moved by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __enter__(self) -> Clock:
        self._patch = mock.patch("time.time", lambda: self.now)
        self._patch.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._patch.stop()


def test_a_write_to_another_group_does_not_extend_a_running_pin(client: Client) -> None:
    with Clock() as clock:
        client.get("/routing/fake-write/?alias=default")
        clock.now += 10
        response = client.get("/routing/fake-write/?alias=mysql")
        assert "rdb_pin" in response.cookies
        assert pins_of(client) == {"default": None, "mysql": None}
        clock.now += 5.5  # default written 15.5 s ago, mysql 5.5 s ago
        assert pins_of(client) == {"mysql": None}
        clock.now += 10  # mysql written 15.5 s ago
        assert pins_of(client) == {}


def test_a_client_that_keeps_writing_to_one_group_is_not_pinned_to_another(
    client: Client,
) -> None:
    with Clock() as clock:
        client.get("/routing/fake-write/?alias=default")
        for _ in range(5):
            clock.now += 4
            client.get("/routing/fake-write/?alias=mysql")
        # default was written 20 s ago, mysql just now.
        assert pins_of(client) == {"mysql": None}


def test_each_group_pin_ends_seconds_after_its_own_last_write(client: Client) -> None:
    with Clock() as clock:
        client.get("/routing/fake-write/?alias=default")
        client.get("/routing/fake-write/?alias=mysql")
        clock.now += 10
        client.get("/routing/fake-write/?alias=default")  # default's pin starts again
        clock.now += 10
        assert pins_of(client) == {"default": None}
        clock.now += 5.5
        assert pins_of(client) == {}


def test_a_cookie_signed_in_the_future_is_clamped_to_now(client: Client) -> None:
    with Clock() as clock:
        real = clock.now
        clock.now = real + 3600  # the server that signed it runs an hour ahead
        client.cookies["rdb_pin"] = dumps_pin({"default": None}, salt=SALT)
        clock.now = real
        response = client.get("/routing/pins/")
        assert json.loads(response.content)["pins"] == {"default": None}
        # The clamped token goes back to the client, so the clamp lasts.
        assert "rdb_pin" in response.cookies
        clock.now += 15.5
        assert pins_of(client) == {}


def test_a_future_write_time_in_a_token_cannot_outlive_its_signature(client: Client) -> None:
    with Clock() as clock:
        token = signing.dumps(
            {"w": {"default": None}, "t": {"default": int((clock.now + 3600) * 1000)}},
            salt=SALT, compress=True,
        )
        assert pins_of(client, rdb_pin=token) == {"default": None}
        clock.now += 15.5
        assert pins_of(client, rdb_pin=token) == {}


def test_exported_task_pins_keep_their_own_write_times() -> None:
    from resilient_db.routers import pin_handoff

    with Clock() as clock:
        old = dumps_pin({"default": None}, salt=SALT)
        clock.now += 10
        with pin_handoff.pinned_unit(old):
            context.note_write("mysql")
            token = pin_handoff.export_pin()
        clock.now += 5.5
        assert pin_handoff.import_pin(token) == {"mysql": None}


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=3),
    max_leaves=8,
)
_aliases = st.sampled_from(["default", "mysql", "*", "other", ""])


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(_aliases, st.none() | st.integers(-5, 10**20) | _json, max_size=4),
    st.dictionaries(_aliases, st.integers(-(10**20), 10**20) | _json, max_size=4) | _json,
)
def test_any_signed_payload_decodes_to_pins_within_their_age_or_nothing(
    written: dict[str, Any], times: Any
) -> None:
    from resilient_db.routers.pins import decode_pins

    token = signing.dumps({"w": written, "t": times}, salt=SALT, compress=True)
    found = decode_pins(token, salt=SALT, max_age=15, known=["default", "mysql"])
    now = time.time()
    assert set(found.pins) <= {"default", "mysql", "*"}
    assert set(found.written_at) == set(found.pins)
    for at in found.written_at.values():
        assert now - 15 - 1 <= at <= now
