"""Helpers for the backend tests: ad-hoc aliases on the test bed, signal capture."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.signals import request_finished, request_started
from django.db import connections
from django.dispatch import Signal

from resilient_db import signals


def pg_backend_pid(alias: str = "default") -> int:
    """Return the server pid of ``alias``'s current session (opening one if needed)."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def maria_connection_id(alias: str = "mysql") -> int:
    """Return the MariaDB connection id of ``alias``'s current session."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        return int(cursor.fetchone()[0])


@contextmanager
def persistent(alias: str, max_age: float | None = None) -> Iterator[None]:
    """Give ``alias`` persistent connections (CONN_MAX_AGE) for the block."""
    conn = connections[alias]
    old = conn.settings_dict["CONN_MAX_AGE"]
    conn.close()
    conn.settings_dict["CONN_MAX_AGE"] = max_age
    try:
        yield
    finally:
        conn.close()
        conn.settings_dict["CONN_MAX_AGE"] = old


@contextmanager
def adhoc_alias(name: str, base: str, **overrides: Any) -> Iterator[Any]:
    """Register a new alias ``name`` built from ``base``'s live settings plus ``overrides``.

    The ORM reaches it with ``using(name)``; it is not in DATABASES, so the
    test runner never creates or flushes anything for it.
    """
    from django.conf import settings

    settings_dict = copy.deepcopy(connections[base].settings_dict)
    settings_dict.update(overrides)
    backend = type(connections[base])
    wrapper = backend(settings_dict, alias=name)
    connections[name] = wrapper
    # In settings.DATABASES too, so RESILIENT_DB may configure it (an alias
    # missing from DATABASES is E012, which also stops the run time). Set
    # directly, without setting_changed, so Django rebuilds no connection.
    databases = settings.DATABASES
    settings.DATABASES = {**databases, name: settings_dict}

    # Django's close_old_connections() only visits aliases in DATABASES: do
    # the same request-boundary check for this one.
    def boundary(**kwargs: Any) -> None:
        wrapper.close_if_unusable_or_obsolete()

    request_started.connect(boundary, weak=False)
    request_finished.connect(boundary, weak=False)
    try:
        yield wrapper
    finally:
        request_started.disconnect(boundary)
        request_finished.disconnect(boundary)
        wrapper.close()
        del connections[name]
        settings.DATABASES = databases


class Captured:
    """Signals received during a block: ``captured[signal] -> [kwargs, ...]``."""

    def __init__(self) -> None:
        self.events: dict[str, list[dict[str, Any]]] = {}

    def __getitem__(self, name: str) -> list[dict[str, Any]]:
        return self.events.get(name, [])


@contextmanager
def capture_signals() -> Iterator[Captured]:
    """Record every project signal sent during the block."""
    captured = Captured()
    receivers: list[tuple[Signal, Any]] = []
    for name in ("target_down", "target_up", "reconnected", "query_retried", "failover"):
        signal: Signal = getattr(signals, name)

        def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
            kwargs.pop("signal", None)
            captured.events.setdefault(_name, []).append(kwargs)

        signal.connect(receiver, weak=False)
        receivers.append((signal, receiver))
    try:
        yield captured
    finally:
        for signal, receiver in receivers:
            signal.disconnect(receiver)


@contextmanager
def resilient_settings(**aliases: dict[str, Any]) -> Iterator[None]:
    """Extend the test RESILIENT_DB: ``aliases`` go into DATABASES, ``_top`` keys at the top."""
    from django.conf import settings
    from django.test import override_settings

    base = copy.deepcopy(settings.RESILIENT_DB)
    top = aliases.pop("_top", {})
    base["DATABASES"].update(aliases)
    base.update(top)
    with override_settings(RESILIENT_DB=base):
        yield
