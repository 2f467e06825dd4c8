"""Per-attempt connect timeouts written into each driver's own parameters.

Every driver counts its connect timeout differently: libpq (psycopg 2 and 3)
takes whole seconds and treats anything below 2 as 2; mysqlclient takes whole
seconds; PyMySQL accepts a float. An explicit ``connect_timeout`` in the
alias's OPTIONS always wins: it is the user's word for that driver.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from typing import Any

#: libpq never waits less than this, whatever it is told.
LIBPQ_MIN_TIMEOUT = 2


def effective_timeout(vendor: str, seconds: float) -> float:
    """Return how long the driver of ``vendor`` really waits when given ``seconds``."""
    if vendor == "postgresql":
        return float(max(LIBPQ_MIN_TIMEOUT, math.ceil(seconds)))
    if vendor == "mysql":
        return float(max(1, math.ceil(seconds)))
    return seconds


def apply_connect_timeout(
    vendor: str, params: MutableMapping[str, Any], options: MutableMapping[str, Any], seconds: float
) -> None:
    """Put a connect timeout of ``seconds`` into ``params`` unless OPTIONS already set one."""
    if "connect_timeout" in options:
        return
    # sqlite3's "timeout" is the lock wait, not a connect timeout: left alone.
    if vendor in ("postgresql", "mysql"):
        params["connect_timeout"] = int(effective_timeout(vendor, seconds))
