from __future__ import annotations

from django.db.backends.postgresql import base

from resilient_db.backends.base import ResilientMixin


class DatabaseWrapper(ResilientMixin, base.DatabaseWrapper):
    pass
