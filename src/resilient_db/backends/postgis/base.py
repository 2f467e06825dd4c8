"""Resilient PostGIS backend: Django's PostGIS backend with reconnect, retry and failover."""

from __future__ import annotations

from django.contrib.gis.db.backends.postgis import base

from resilient_db.backends.base import ResilientMixin
from resilient_db.backends.pooling import PoolPerTarget


class DatabaseWrapper(ResilientMixin, PoolPerTarget, base.DatabaseWrapper):
    """Django's PostGIS ``DatabaseWrapper`` made resilient."""
