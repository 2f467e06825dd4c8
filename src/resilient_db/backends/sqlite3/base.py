"""Resilient sqlite3 backend: Django's own sqlite3 backend with reconnect, retry and failover."""

from __future__ import annotations

from django.db.backends.sqlite3 import base

from resilient_db.backends.base import ResilientMixin


class DatabaseWrapper(ResilientMixin, base.DatabaseWrapper):
    """Django's sqlite3 ``DatabaseWrapper`` made resilient."""
