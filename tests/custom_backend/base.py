"""A third-party-style backend (a PostgreSQL subclass) made resilient with make_resilient."""

from __future__ import annotations

from django.db.backends.postgresql import base

from resilient_db.backends import make_resilient


class CustomWrapper(base.DatabaseWrapper):
    """Stands for a backend the project does not ship (it only renames itself)."""

    display_name = "CustomPostgreSQL"


DatabaseWrapper = make_resilient(CustomWrapper)
