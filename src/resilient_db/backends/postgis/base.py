"""Resilient PostGIS backend: Django's PostGIS backend with reconnect, retry and failover."""

from __future__ import annotations

from django.contrib.gis.db.backends.postgis import base

from resilient_db.backends.base import ResilientMixin


class DatabaseWrapper(ResilientMixin, base.DatabaseWrapper):
    """Django's PostGIS ``DatabaseWrapper`` made resilient."""
