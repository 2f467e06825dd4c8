"""Settings for the example project's tests: SQLite unless SHOP_DB or DATABASE_URL says else.

SHOP_DB=bed runs the same tests on the PostgreSQL test bed.
"""

from __future__ import annotations

import os

os.environ.setdefault("SHOP_DB", "sqlite")

from shop.settings import *  # noqa: E402, F403  (the project's settings, unchanged)
