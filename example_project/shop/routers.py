"""The primary/replica router from Django's documentation, for the stock comparison.

It sends every read to the replica and every write to the primary, with no idea of
health, lag or read-your-writes: what a site without django-resilient-db typically runs.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Model


class PrimaryReplicaRouter:
    """Reads to ``replica`` when it is configured, everything else to ``default``."""

    def db_for_read(self, model: type[Model], **hints: Any) -> str:
        """Return the replica alias if there is one."""
        return "replica" if "replica" in settings.DATABASES else "default"

    def db_for_write(self, model: type[Model], **hints: Any) -> str:
        """Return the primary alias."""
        return "default"

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool:
        """Allow relations: both aliases hold the same data."""
        return True

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        """Migrate every alias but the replica (which shows the primary's data)."""
        return db != "replica"
