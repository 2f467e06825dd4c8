"""One reset hook for every module-level cache: settings changes, forks, and nothing at import."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.core.signals import setting_changed
from django.test import override_settings

from resilient_db import caches, conf
from resilient_db.health import registry, snapshot, targets
from resilient_db.health.registry import get_registry

ROOT = Path(__file__).resolve().parent.parent


def test_every_cache_of_the_health_picture_is_registered() -> None:
    registered = set(caches._resets)
    assert conf.clear_cache in registered
    assert targets.clear_cache in registered
    assert registry._forget in registered
    assert snapshot._forget in registered


def test_a_change_of_a_setting_the_app_reads_empties_them() -> None:
    for name in sorted(caches.SETTINGS):
        first = get_registry()
        targets._cache["x"] = ()
        # The receiver itself: overriding DATABASES makes Django warn.
        caches.on_setting_changed(setting=name, value=getattr(settings, name), enter=True)
        assert get_registry() is not first
        assert "x" not in targets._cache
    first = get_registry()
    with override_settings(RESILIENT_DB={"CHECK_INTERVAL": 2.0}):
        assert get_registry() is not first
        assert get_registry().check_interval == 2.0


def test_other_settings_leave_them_alone() -> None:
    first = get_registry()
    with override_settings(LANGUAGE_CODE="fr", MIDDLEWARE=[]):
        assert get_registry() is first
    assert get_registry() is first


def test_ready_is_idempotent() -> None:
    config = apps.get_app_config("resilient_db")
    before = list(caches._resets)
    config.ready()
    config.ready()
    assert caches._resets == before
    receivers = [r for r in setting_changed.receivers if r[0][0] == "resilient_db.caches"]
    assert len(receivers) == 1


def test_importing_the_package_connects_nothing() -> None:
    # A fresh interpreter: importing every health module must not connect a
    # receiver or register a fork hook before the app is ready.
    code = textwrap.dedent(
        """
        import os
        calls = []
        os.register_at_fork = lambda **kw: calls.append(kw)
        from django.core.signals import setting_changed
        before = len(setting_changed.receivers)
        import resilient_db.caches, resilient_db.health.registry, resilient_db.health.snapshot
        import resilient_db.health.targets, resilient_db.health.stores
        # Django's own modules may connect theirs when imported (translation
        # does); none of ours may.
        added = [ref() if callable(ref) else ref for _, ref, *_ in setting_changed.receivers[before:]]
        mine = [f for f in added if (getattr(f, "__module__", None) or "").startswith("resilient_db")]
        assert mine == [], mine
        ours = [f for kw in calls for f in kw.values()
                if (getattr(f, "__module__", None) or "").startswith("resilient_db")]
        assert ours == [], ours
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), str(ROOT / "testbed")])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_a_forked_child_starts_from_empty_caches() -> None:
    # In a single-threaded interpreter of its own: forking this test process
    # (with the monitor and probe threads of other tests) is not safe.
    code = textwrap.dedent(
        """
        import os, django
        django.setup()
        from resilient_db.health import registry, targets
        parent = registry.get_registry()
        targets._cache["x"] = ()
        pid = os.fork()
        if pid == 0:
            ok = registry._registry is None and "x" not in targets._cache
            ok = ok and registry.get_registry() is not parent
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert registry.get_registry() is parent and "x" in targets._cache
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), str(ROOT / "testbed")]),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
    }
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120, cwd=ROOT)
