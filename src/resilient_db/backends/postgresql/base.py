"""Resilient postgresql backend: Django's own postgresql backend with reconnect, retry and failover."""

from __future__ import annotations

from django.db.backends.postgresql import base

from resilient_db.backends.base import ResilientMixin
from resilient_db.backends.pooling import PoolPerTarget


class DatabaseWrapper(ResilientMixin, PoolPerTarget, base.DatabaseWrapper):
    """Django's postgresql ``DatabaseWrapper`` made resilient."""
