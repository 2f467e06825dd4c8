"""The test bed's own Redis server (no persistence)."""

from __future__ import annotations

from resilient_db_testbed.bed_config import BedError
from resilient_db_testbed.bed_process import RunAs, prepare_dir, run, run_as, which
from resilient_db_testbed.bed_server import Server

__all__ = ["Redis"]


class Redis(Server):
    """A throw-away redis-server on loopback, nothing saved to disk."""

    name = "redis"
    role = "cache"

    @property
    def owner(self) -> RunAs:
        """Return the account Redis runs as."""
        return run_as("redis", "nobody")

    @property
    def marker(self) -> str:
        """Return what redis-server shows as its process title."""
        return f"{self.cfg.host}:{self.port}"

    def initialised(self) -> bool:
        """Tell whether the working directory exists."""
        return self.dir.is_dir()

    def initialise(self) -> None:
        """Create the working directory."""
        prepare_dir(self.dir, self.owner)

    def launch(self) -> None:
        """Start redis-server, which detaches itself."""
        binary = which("redis-server")
        if binary is None:
            raise BedError("redis-server not found; run: python -m resilient_db_testbed.bed install")
        run(
            [
                str(binary), "--port", str(self.port), "--bind", self.cfg.host,
                "--save", "", "--appendonly", "no", "--daemonize", "yes",
                "--pidfile", str(self.pidfile), "--logfile", str(self.log),
                "--dir", str(self.dir), "--unixsocket", "", "--protected-mode", "yes",
            ],
            owner=self.owner,
            cwd=self.dir,
            timeout=15.0,
        )
