"""MariaDB part of the test bed (interim: not started yet)."""

from __future__ import annotations

from resilient_db.testing.bed_config import BedConfig
from resilient_db.testing.bed_server import Server


class _Pending(Server):
    def ensure(self) -> None:
        """Do nothing until the MariaDB half lands."""

    def running(self) -> bool:
        """Report not running."""
        return False


class MariaPrimary(_Pending):
    """MariaDB primary."""

    name = "maria_primary"
    role = "primary"


class MariaReplica(_Pending):
    """MariaDB replica."""

    name = "maria_replica"
    role = "replica"

    def __init__(self, cfg: BedConfig, primary: MariaPrimary) -> None:
        super().__init__(cfg)


class MariaPeerA(_Pending):
    """Proxy peer A."""

    name = "maria_peer_a"
    role = "peer"


class MariaPeerB(_Pending):
    """Proxy peer B."""

    name = "maria_peer_b"
    role = "peer"
