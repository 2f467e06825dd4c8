"""The common shape of one server of the test bed."""

from __future__ import annotations

import hashlib
import secrets
import signal
from pathlib import Path

from resilient_db_testbed.bed_config import BedConfig, BedError
from resilient_db_testbed.bed_process import (
    RunAs,
    log_tail,
    port_open,
    read_pid,
    stop_pid,
    wait_until,
)

__all__ = ["READY", "Server"]

#: The file in a server's directory naming its data's generation: a random token
#: on a primary, the primary's token on a replica built from it.
READY = ".ready"


class Server:
    """One server of the bed: knows how to initialise, start, stop and check itself."""

    name: str = ""
    role: str = ""
    stop_signal: int = signal.SIGTERM
    start_timeout: float = 60.0

    def __init__(self, cfg: BedConfig) -> None:
        self.cfg = cfg
        self.dir = cfg.server_dir(self.name)
        self.port = cfg.port(self.name)

    @property
    def owner(self) -> RunAs:
        """Return the account this server runs as."""
        return RunAs()

    @property
    def pidfile(self) -> Path:
        """Return the file holding the server's process id."""
        return self.dir / "server.pid"

    @property
    def log(self) -> Path:
        """Return the server's log file."""
        return self.dir / "server.log"

    @property
    def marker(self) -> str:
        """Return a string the server's command line contains (tells a reused pid apart)."""
        return str(self.dir)

    def pid(self) -> int | None:
        """Return the process id of the running server, or ``None``."""
        pid = read_pid(self.pidfile)
        if pid is None:
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace"
            )
        except OSError:
            return pid
        # A stale pid file may name a pid the system gave to an unrelated process since.
        return pid if self.marker in cmdline else None

    def running(self) -> bool:
        """Tell whether the server process lives and accepts TCP connections."""
        return self.pid() is not None and port_open(self.cfg.host, self.port)

    def initialised(self) -> bool:
        """Tell whether the server's data is ready to start from."""
        return True

    def initialise(self) -> None:
        """Create the server's data from nothing."""

    def launch(self) -> None:
        """Start the server process from initialised data (no waiting)."""
        raise NotImplementedError

    def configure(self) -> None:
        """Apply idempotent setup once the server runs (users, replication...)."""

    def generation(self) -> str:
        """Return the token identifying this server's data (``""`` when not set up)."""
        try:
            return (self.dir / READY).read_text().strip()
        except OSError:
            return ""

    def _setup_done(self, script: str) -> bool:
        # The setup is re-applied (it is idempotent) whenever its text changed, so a new
        # grant reaches an existing bed without a rebuild; replicas get it by replication.
        digest = hashlib.sha256(script.encode()).hexdigest()
        try:
            return bool(self.generation()) and (self.dir / ".setup").read_text().strip() == digest
        except OSError:
            return False

    def _mark_setup(self, script: str) -> None:
        (self.dir / ".setup").write_text(hashlib.sha256(script.encode()).hexdigest() + "\n")
        if not self.generation():
            (self.dir / READY).write_text(secrets.token_hex(8) + "\n")

    def healthy(self) -> bool:
        """Tell whether the server runs and does its job (replicas: stream)."""
        return self.running()

    def start(self) -> None:
        """Start the server if it is not running and wait until it accepts connections."""
        if self.running():
            return
        if self.pid() is None:
            self.pidfile.unlink(missing_ok=True)
            try:
                self.launch()
            except BedError as exc:
                raise BedError(
                    f"{self.name} did not start: {exc}\n--- last lines of {self.log} ---\n"
                    f"{log_tail(self.log)}"
                ) from exc
        wait_until(
            self.running,
            timeout=self.start_timeout,
            interval=0.05,
            what=f"{self.name} to accept connections on {self.cfg.host}:{self.port}",
            log=self.log,
        )

    def stop(self) -> None:
        """Stop the server if it runs and wait until its process is gone."""
        pid = self.pid()
        if pid is not None:
            stop_pid(pid, sig=self.stop_signal, timeout=60.0)

    def ensure(self) -> None:
        """Initialise if needed, start if needed, configure and wait until healthy."""
        if not self.initialised():
            self.stop()
            self.initialise()
        self.start()
        self.configure()
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Wait (bounded) until :meth:`healthy` holds."""
        wait_until(
            self.healthy,
            timeout=timeout,
            interval=0.1,
            what=f"{self.name} to become healthy",
            log=self.log,
        )
