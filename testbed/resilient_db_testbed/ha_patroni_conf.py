"""What a Patroni member of the bed is told: its ``patroni.yml``.

Three parts: where the member answers (its REST API and etcd), how a new
cluster starts (the DCS settings Patroni copies into etcd once, and initdb),
and the PostgreSQL it manages (addresses, data, accounts, parameters, pg_hba).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resilient_db_testbed.ha_config import PATRONI_TIMINGS, HaConfig

__all__ = ["patroni_conf"]

#: PostgreSQL parameters every member gets through the DCS (the same on each, as
#: Patroni requires for these): streaming, slots, pg_rewind, quick retries.
_DCS_PARAMETERS: dict[str, Any] = {
    "wal_level": "replica",
    "hot_standby": "on",
    "wal_log_hints": "on",
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "wal_keep_size": "256MB",
    "max_connections": 100,
    "wal_receiver_status_interval": "1s",
    "wal_retrieve_retry_interval": "500ms",
    "hot_standby_feedback": "on",
}


def patroni_conf(cfg: HaConfig, name: str, directory: Path, bindir: Path) -> dict[str, Any]:
    """Return member ``name``'s configuration (its files under ``directory``)."""
    rest = f"{cfg.host}:{cfg.rest_port(name)}"
    return {
        "scope": cfg.scope,
        "namespace": "/rdb-bed/",
        "name": name,
        "log": {"level": "INFO", "format": "%(asctime)s %(levelname)s: %(message)s"},
        "restapi": {"listen": rest, "connect_address": rest},
        "etcd3": {"hosts": [f"{cfg.host}:{cfg.etcd_client_port}"]},
        "bootstrap": _bootstrap(),
        "postgresql": _postgresql(cfg, name, directory, bindir),
        "watchdog": {"mode": "off"},
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    }


def _bootstrap() -> dict[str, Any]:
    return {
        "dcs": {
            **PATRONI_TIMINGS,
            "maximum_lag_on_failover": 1048576,
            # Synchronous replication: an acknowledged commit is on a
            # standby, so a failover cannot lose it.
            "synchronous_mode": True,
            "postgresql": {
                "use_pg_rewind": True,
                "use_slots": True,
                "parameters": dict(_DCS_PARAMETERS),
            },
        },
        "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, "no-sync"],
    }


def _postgresql(cfg: HaConfig, name: str, directory: Path, bindir: Path) -> dict[str, Any]:
    bed = cfg.bed
    address = f"{cfg.host}:{cfg.member_port(name)}"
    admin = {"username": bed.pg_admin_user, "password": bed.pg_admin_password}
    return {
        "listen": address,
        "connect_address": address,
        "data_dir": str(directory / "data"),
        "bin_dir": str(bindir),
        "pgpass": str(directory / "pgpass"),
        "remove_data_directory_on_rewind_failure": True,
        "remove_data_directory_on_diverged_timelines": True,
        "authentication": {
            "superuser": dict(admin),
            "replication": {"username": bed.replication_user, "password": bed.replication_password},
            "rewind": dict(admin),
        },
        "parameters": {
            "unix_socket_directories": str(directory / "run"),
            "shared_buffers": "32MB",
            "fsync": "off",  # the bed loses no data to an OS crash it never has
            "full_page_writes": "off",
            "log_line_prefix": "%m [%p] %q%u@%d ",
            "timezone": "UTC",
            "log_timezone": "UTC",
        },
        "pg_hba": [
            "local all all trust",
            "local replication all trust",
            f"host replication {bed.replication_user} 127.0.0.1/32 scram-sha-256",
            "host all all 127.0.0.1/32 scram-sha-256",
        ],
    }
