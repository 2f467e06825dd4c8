"""Where the high-availability clusters of the bed live and listen.

The clusters are opt-in (``python -m resilient_db_testbed.ha up``): a
Patroni-managed PostgreSQL cluster of three members on a single-node etcd, and
a three-node MariaDB Galera cluster. Their ports follow
``RESILIENT_DB_BED_PORT_BASE`` like the ordinary bed's; each base port ends in
two digits no other port of the bed uses, so beds shifted by multiples of 100
never collide. Their state lives in ``<bed dir>-ha``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from resilient_db_testbed.bed_config import BedConfig, config

__all__ = ["MEMBERS", "NODES", "PATRONI_TIMINGS", "HaConfig", "ha_config"]

#: Patroni members and Galera nodes, by name.
MEMBERS: tuple[str, ...] = ("pg_ha_1", "pg_ha_2", "pg_ha_3")
NODES: tuple[str, ...] = ("galera_1", "galera_2", "galera_3")

#: Patroni's own timings: they set the failover floor (about ttl after a leader
#: dies) and keep Patroni's rule loop_wait + 2 * retry_timeout <= ttl. ttl is
#: 20 because Patroni 4 raises any smaller value to 20.
PATRONI_TIMINGS: dict[str, int] = {"ttl": 20, "loop_wait": 2, "retry_timeout": 4}


@dataclasses.dataclass(frozen=True)
class HaConfig:
    """Ports, directories and credentials of the two clusters."""

    bed: BedConfig
    root: Path
    shift: int
    scope: str = "rdb-ha"

    @property
    def host(self) -> str:
        """Return the loopback address every process binds to."""
        return self.bed.host

    @property
    def etcd_client_port(self) -> int:
        """Return etcd's client port."""
        return 27340 + self.shift

    @property
    def etcd_peer_port(self) -> int:
        """Return etcd's peer port (a single node, but etcd listens anyway)."""
        return 27341 + self.shift

    def member_port(self, name: str) -> int:
        """Return the PostgreSQL port of Patroni member ``name``."""
        return 25442 + MEMBERS.index(name) + self.shift

    def rest_port(self, name: str) -> int:
        """Return the REST API port of Patroni member ``name``."""
        return 28045 + MEMBERS.index(name) + self.shift

    def node_port(self, name: str) -> int:
        """Return the SQL port of Galera node ``name``."""
        return 23348 + NODES.index(name) + self.shift

    def gcomm_port(self, name: str) -> int:
        """Return the group-communication port of Galera node ``name``."""
        return 24551 + NODES.index(name) + self.shift

    def ist_port(self, name: str) -> int:
        """Return the incremental-state-transfer port of Galera node ``name``."""
        return 24554 + NODES.index(name) + self.shift

    def sst_port(self, name: str) -> int:
        """Return the rsync state-transfer port of Galera node ``name``."""
        return 24557 + NODES.index(name) + self.shift

    @property
    def patroni_venv(self) -> Path:
        """Return the virtualenv Patroni runs from (kept across ``down``: it is only code)."""
        return self.root.with_name(self.root.name + "-patroni-venv")

    @property
    def patroni_bin(self) -> Path:
        """Return the ``patroni`` executable."""
        return self.patroni_venv / "bin" / "patroni"

    @property
    def patronictl_bin(self) -> Path:
        """Return the ``patronictl`` executable."""
        return self.patroni_venv / "bin" / "patronictl"


def ha_config() -> HaConfig:
    """Return the HA configuration for the current ``RESILIENT_DB_BED_*`` variables."""
    bed = config()
    shift = bed.pg_primary_port - BedConfig(root=bed.root).pg_primary_port
    return HaConfig(bed=bed, root=bed.root.with_name(bed.root.name + "-ha"), shift=shift)
