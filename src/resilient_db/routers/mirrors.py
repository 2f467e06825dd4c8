"""Make every replica a test mirror of its primary under Django's test runner.

Django creates a test database for each alias that is not a ``TEST["MIRROR"]``.
A replica without it gets its own empty, un-migrated ``test_<name>`` database
(``allow_migrate`` is False there), the failure django-multidb-router users
report (its issue #51: it set MIRROR lazily, after the databases were built).
Setting it when the app is ready is early enough for both Django's runner and
pytest-django, and harmless elsewhere: ``MIRROR`` is read only when test
databases are created, flushed and destroyed.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("resilient_db.routers")


def configure_test_mirrors() -> dict[str, str]:
    """Set ``TEST["MIRROR"]`` of every replica that has none; return what was set."""
    from django.db import connections

    from resilient_db.conf import parse_settings

    # parse_settings, not get_settings: a broken RESILIENT_DB is reported by
    # the system checks, it must not make app loading raise.
    parsed, _problems = parse_settings(_raw())
    done: dict[str, str] = {}
    databases = connections.settings
    for primary, cfg in parsed.databases.items():
        if primary not in databases:
            continue
        for replica in cfg.replicas:
            if replica == primary or replica not in databases:
                continue
            test = databases[replica].setdefault("TEST", {})
            if not test.get("MIRROR"):
                test["MIRROR"] = primary
                done[replica] = primary
    if done:
        logger.debug("Test mirrors set: %s", done)
    return done


def _raw() -> object:
    from django.conf import settings

    from resilient_db.conf import SETTING

    return getattr(settings, SETTING, None)
