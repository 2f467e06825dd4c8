"""Turn environment variables (or the local test bed) into DATABASES and RESILIENT_DB.

Three sources, first match wins:

1. ``DATABASE_URL`` (plus ``DATABASE_PEERS`` and ``DATABASE_REPLICAS``, comma-separated
   URLs), read with django-environ: a real deployment.
2. The project's local test bed (PostgreSQL primary, a streaming replica and two PgBouncers
   as equivalent peers) when PostgreSQL binaries are installed and the bed answers, or
   when ``SHOP_DB=bed`` forces it.
3. An embedded SQLite file next to ``manage.py``, so the project always starts.

``SHOP_STOCK=1`` swaps every engine for Django's stock backend and drops the resilient
router: the demo uses it to show the same traffic without django-resilient-db.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import environ

PROJECT_DIR = Path(__file__).resolve().parent.parent
SQLITE_FILE = PROJECT_DIR / "db.sqlite3"

# The stock engine each resilient engine wraps (and back).
RESILIENT_ENGINES = {
    "django.db.backends.postgresql": "resilient_db.backends.postgresql",
    "django.db.backends.mysql": "resilient_db.backends.mysql",
    "django.db.backends.sqlite3": "resilient_db.backends.sqlite3",
    "django.contrib.gis.db.backends.postgis": "resilient_db.backends.postgis",
}
STOCK_ENGINES = {v: k for k, v in RESILIENT_ENGINES.items()}

# The example project runs its own instance of the test bed (other ports, other directory),
# so the demo's faults never hit a bed the test suite is using at the same time.
BED_PORT_BASE = "300"
BED_DIR_NAME = "resilient-db-example-bed"
BED_SERVERS = ("pg_primary", "pg_replica", "pgbouncer_a", "pgbouncer_b")
# The bed's MariaDB primary and the two TCP peers in front of it: the "maria"
# alias, when MariaDB and mysqlclient are installed (SHOP_MARIA=0 leaves it out).
MARIA_SERVERS = ("maria_primary", "maria_peer_a", "maria_peer_b")


@dataclass
class DatabasePlan:
    """What the settings module needs: the aliases, their peers and where they came from."""

    source: str  # "env", "bed" or "sqlite"
    databases: dict[str, dict[str, Any]]
    peers: list[str | dict[str, Any]] = field(default_factory=list)
    replicas: list[str] = field(default_factory=list)
    maria_peers: list[str | dict[str, Any]] = field(default_factory=list)


def resilient_engine(engine: str) -> str:
    """Return the resilient engine wrapping ``engine`` (unchanged when it has none)."""
    return RESILIENT_ENGINES.get(engine, engine)


def stock_engine(engine: str) -> str:
    """Return Django's stock engine for ``engine`` (unchanged when it is stock already)."""
    return STOCK_ENGINES.get(engine, engine)


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _from_url(url: str, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = environ.Env.db_url_config(url)
    config["ENGINE"] = resilient_engine(config["ENGINE"])
    config.update(extra)
    return config


def plan_from_env(env: environ.Env) -> DatabasePlan:
    """Read ``DATABASE_URL``, ``DATABASE_PEERS`` and ``DATABASE_REPLICAS``."""
    default = _from_url(env.str("DATABASE_URL"))
    databases = {"default": default}
    replicas: list[str] = []
    for index, url in enumerate(_split(env.str("DATABASE_REPLICAS", default="")), start=1):
        alias = "replica" if index == 1 else f"replica_{index}"
        # A replica shows the primary's data: tests must not build a database on it.
        databases[alias] = _from_url(url, TEST={"MIRROR": "default"})
        replicas.append(alias)
    # Peers stay URLs: RESILIENT_DB reads them itself, so they never become Django aliases
    # and migrate never needs every peer up.
    peers: list[str | dict[str, Any]] = list(_split(env.str("DATABASE_PEERS", default="")))
    return DatabasePlan("env", databases, peers, replicas)


def use_example_bed() -> None:
    """Point the bed at the example project's instance unless the environment chose one."""
    if "RESILIENT_DB_BED_PORT_BASE" in os.environ or "RESILIENT_DB_BED_DIR" in os.environ:
        return
    os.environ["RESILIENT_DB_BED_PORT_BASE"] = BED_PORT_BASE
    os.environ["RESILIENT_DB_BED_DIR"] = str(Path(tempfile.gettempdir()) / BED_DIR_NAME)


def bed_available() -> bool:
    """Tell whether PostgreSQL and PgBouncer binaries for the local test bed are installed."""
    try:
        from resilient_db_testbed.bed_pg import pg_bindir, pgbouncer_binary
    except ImportError:  # the repository's development-only test bed; a user's install lacks it
        return False
    return pg_bindir() is not None and pgbouncer_binary() is not None


def maria_available() -> bool:
    """Tell whether the bed's MariaDB half can run and be used (binaries and mysqlclient)."""
    if os.environ.get("SHOP_MARIA", "1") == "0":
        return False
    try:
        import MySQLdb  # noqa: F401 - only whether it imports

        from resilient_db_testbed.bed_process import which
    except ImportError:
        return False
    return (which("mariadbd", "mysqld") is not None
            and which("mariadb-install-db", "mysql_install_db") is not None)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def bed_running() -> bool:
    """Tell whether the bed's PgBouncer A answers on loopback (a quick TCP connect)."""
    from resilient_db_testbed.bed import config

    cfg = config()
    try:
        with socket.create_connection((cfg.host, cfg.pgbouncer_a_port), timeout=0.3):
            return True
    except OSError:
        return False


def plan_from_bed() -> DatabasePlan:
    """Point ``default`` at PgBouncer A, peer PgBouncer B, and ``replica`` at the replica."""
    from resilient_db_testbed.bed import config

    cfg = config()

    def pg(port: int, **extra: Any) -> dict[str, Any]:
        return {
            "ENGINE": "resilient_db.backends.postgresql",
            "HOST": cfg.host,
            "PORT": str(port),
            "NAME": cfg.pg_db,
            "USER": cfg.pg_user,
            "PASSWORD": cfg.pg_password,
            **extra,
        }

    databases = {
        "default": pg(cfg.pgbouncer_a_port),
        "replica": pg(cfg.pg_replica_port, TEST={"MIRROR": "default"}),
    }
    peers: list[str | dict[str, Any]] = [{"HOST": cfg.host, "PORT": str(cfg.pgbouncer_b_port)}]
    maria_peers: list[str | dict[str, Any]] = []
    if maria_available() and _answers(cfg.host, cfg.maria_primary_port):
        databases["maria"] = {
            "ENGINE": "resilient_db.backends.mysql",
            "HOST": cfg.host,
            "PORT": str(cfg.maria_peer_a_port),
            "NAME": cfg.maria_db,
            "USER": cfg.maria_user,
            "PASSWORD": cfg.maria_password,
        }
        maria_peers = [{"HOST": cfg.host, "PORT": str(cfg.maria_peer_b_port)}]
    return DatabasePlan("bed", databases, peers, ["replica"], maria_peers)


def plan_sqlite() -> DatabasePlan:
    """Use one SQLite file next to ``manage.py``."""
    return DatabasePlan(
        "sqlite",
        {"default": {"ENGINE": "resilient_db.backends.sqlite3", "NAME": str(SQLITE_FILE)}},
    )


def plan(env: environ.Env) -> DatabasePlan:
    """Choose the databases: environment, then the local test bed, then SQLite."""
    if env.str("DATABASE_URL", default=""):
        return plan_from_env(env)
    mode = env.str("SHOP_DB", default="auto")
    if mode in {"auto", "bed"}:
        use_example_bed()
    if mode == "bed" or (mode == "auto" and bed_available() and bed_running()):
        return plan_from_bed()
    if mode not in {"auto", "sqlite", "bed"}:
        raise ValueError(f"SHOP_DB must be auto, bed or sqlite, not {mode!r}")
    return plan_sqlite()


def finish(
    databases: dict[str, dict[str, Any]],
    *,
    stock: bool,
    conn_max_age: int,
    connect_timeout: int,
) -> None:
    """Apply connection options shared by every alias (in place)."""
    for config in databases.values():
        if stock:
            config["ENGINE"] = stock_engine(config["ENGINE"])
        if "sqlite3" in config["ENGINE"]:
            continue
        config.setdefault("CONN_MAX_AGE", conn_max_age)
        config.setdefault("CONN_HEALTH_CHECKS", True)
        # Both libpq and mysqlclient take connect_timeout in whole seconds.
        config.setdefault("OPTIONS", {}).setdefault("connect_timeout", connect_timeout)
