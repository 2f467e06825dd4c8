"""Resilient mysql backend: Django's own mysql backend with reconnect, retry and failover."""

from __future__ import annotations

from django.db.backends.mysql import base

from resilient_db.backends.base import ResilientMixin


class DatabaseWrapper(ResilientMixin, base.DatabaseWrapper):
    """Django's mysql ``DatabaseWrapper`` made resilient."""
