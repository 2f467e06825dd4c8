"""Settings for the example project's tests: SQLite, unless DATABASE_URL names a database.

The tests are smoke tests of the project itself; the failure behaviour is shown on the real
PostgreSQL bed by ``run.py demo``. (Test databases made through PgBouncer cannot be dropped
while PgBouncer keeps its server connections open, so the bed is not used here.)
"""

from __future__ import annotations

import os

os.environ["SHOP_DB"] = "sqlite"

from shop.settings import *  # noqa: E402, F403  (the project's settings, unchanged)
