"""Resilient postgresql backend: Django's own postgresql backend with reconnect, retry and failover."""

from __future__ import annotations

from django.db.backends.postgresql import base

from resilient_db.backends.base import ResilientMixin


class DatabaseWrapper(ResilientMixin, base.DatabaseWrapper):
    """Django's postgresql ``DatabaseWrapper`` made resilient."""
