"""One reset hook for every module-level cache.

A module that keeps something derived from settings, or per-process state
that a forked child must not inherit (a lock a parent thread held, a probe in
flight), registers a function that empties it. ``apps.py`` calls
:func:`reset_all` when ``RESILIENT_DB``, ``DATABASES`` or ``CACHES`` change
(``override_settings`` in tests) and in a child after ``os.fork()``, so no
cache is cleared by a hook of its own, and importing a module connects
nothing. A reset function must be cheap and must not read settings: the next
use rebuilds lazily.

Not registered, on purpose: memos of pure functions over process constants
(``sql.is_read_only``, the driver keyword lists and engine vendors in
``peers.py``); and values keyed on the parsed settings object itself (the
router's replica groups, the classifier's ``ERROR_CODES`` tables), which
rebuild by themselves once the parsed settings are dropped here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

from django.core.signals import setting_changed

__all__ = ["SETTINGS", "install", "on_setting_changed", "register", "reset_all"]

Reset = TypeVar("Reset", bound=Callable[[], None])

#: The settings whose change empties every cache.
SETTINGS = frozenset({"RESILIENT_DB", "DATABASES", "CACHES"})

_resets: list[Callable[[], None]] = []
_installed = False
_install_lock = threading.Lock()


def register(reset: Reset) -> Reset:
    """Add ``reset`` (no arguments) to the functions :func:`reset_all` calls; return it."""
    if reset not in _resets:
        _resets.append(reset)
    return reset


def reset_all() -> None:
    """Empty every registered cache, in registration order."""
    for reset in list(_resets):
        reset()


def on_setting_changed(*, setting: str, **kwargs: object) -> None:
    """Receive Django's ``setting_changed``: reset when a setting the app reads changed."""
    if setting in SETTINGS:
        reset_all()


def install() -> None:
    """Connect the resets to ``setting_changed`` and to forks (idempotent; from ``AppConfig.ready``)."""
    global _installed
    with _install_lock:
        setting_changed.connect(on_setting_changed, dispatch_uid="resilient_db.caches")
        if not _installed:
            # os.register_at_fork cannot be undone, so it is added once per process.
            os.register_at_fork(after_in_child=reset_all)
            _installed = True
