"""Configuration of the test bed: ports, credentials and the state directory."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

__all__ = ["SERVER_NAMES", "BedConfig", "BedError", "config"]

#: Every server of the bed, in start order.
SERVER_NAMES: tuple[str, ...] = (
    "pg_primary",
    "pg_replica",
    "pgbouncer_a",
    "pgbouncer_b",
    "maria_primary",
    "maria_replica",
    "maria_peer_a",
    "maria_peer_b",
    "redis",
)


class BedError(RuntimeError):
    """A server of the bed could not be brought into the wanted state."""


@dataclasses.dataclass(frozen=True)
class BedConfig:
    """Where the bed lives and how to reach each of its servers."""

    root: Path
    host: str = "127.0.0.1"
    pg_primary_port: int = 25432
    pg_replica_port: int = 25433
    pgbouncer_a_port: int = 26432
    pgbouncer_b_port: int = 26433
    maria_primary_port: int = 23306
    maria_replica_port: int = 23307
    maria_peer_a_port: int = 23316
    maria_peer_b_port: int = 23317
    redis_port: int = 26379
    pg_user: str = "rdb"
    pg_password: str = "rdb-bed-secret"
    pg_db: str = "rdb"
    pg_admin_user: str = "rdb_admin"
    pg_admin_password: str = "rdb-bed-admin"
    maria_user: str = "rdb"
    maria_password: str = "rdb-bed-secret"
    maria_db: str = "rdb"
    maria_admin_user: str = "rdb_admin"
    maria_admin_password: str = "rdb-bed-admin"
    limited_user: str = "rdb_limited"
    limited_password: str = "rdb-bed-secret"
    replication_user: str = "rdb_repl"
    replication_password: str = "rdb-bed-repl"

    def port(self, name: str) -> int:
        """Return the TCP port of the server called ``name``."""
        if name not in SERVER_NAMES:
            raise KeyError(f"unknown bed server {name!r}; known: {', '.join(SERVER_NAMES)}")
        port: int = getattr(self, f"{name}_port")
        return port

    def server_dir(self, name: str) -> Path:
        """Return the state directory of the server called ``name``."""
        return self.root / name


def config() -> BedConfig:
    """Return the bed configuration, honouring the ``RESILIENT_DB_BED_*`` variables."""
    root = Path(
        os.environ.get("RESILIENT_DB_BED_DIR")
        or Path(tempfile.gettempdir()) / "resilient-db-bed"
    )
    shift = int(os.environ.get("RESILIENT_DB_BED_PORT_BASE", "0") or "0")
    defaults = BedConfig(root=root)
    ports = {
        f"{name}_port": getattr(defaults, f"{name}_port") + shift for name in SERVER_NAMES
    }
    return dataclasses.replace(defaults, **ports)
