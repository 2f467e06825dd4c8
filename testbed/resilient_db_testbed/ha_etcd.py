"""The single-node etcd the Patroni cluster keeps its leader key in.

It comes from Debian's ``etcd-server`` package and runs as the ``etcd`` account
(``nobody`` where there is none) on loopback, its data under the HA state directory.
"""

from __future__ import annotations

import json
import urllib.request

from resilient_db_testbed.bed_config import BedError
from resilient_db_testbed.bed_process import (
    RunAs,
    prepare_dir,
    read_pid,
    run_as,
    stop_pid,
    wait_until,
    which,
)
from resilient_db_testbed.ha_config import HaConfig
from resilient_db_testbed.ha_process import spawn_with_pidfile

__all__ = ["Etcd"]


class Etcd:
    """The single etcd node Patroni keeps its leader key in."""

    name = "etcd"

    def __init__(self, cfg: HaConfig) -> None:
        self.cfg = cfg
        self.dir = cfg.root / "etcd"
        self.pidfile = self.dir / "etcd.pid"
        self.log = self.dir / "etcd.log"

    @property
    def owner(self) -> RunAs:
        """Return the account etcd runs as."""
        return run_as("etcd", "nobody")

    @property
    def url(self) -> str:
        """Return the client URL."""
        return f"http://{self.cfg.host}:{self.cfg.etcd_client_port}"

    def pid(self) -> int | None:
        """Return etcd's pid, or ``None`` when it does not run."""
        return read_pid(self.pidfile)

    def running(self) -> bool:
        """Tell whether etcd runs and answers its health endpoint."""
        if self.pid() is None:
            return False
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1.0) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def start(self) -> None:
        """Start etcd unless it runs and wait (bounded) until it is healthy."""
        if self.running():
            return
        binary = which("etcd")
        if binary is None:
            raise BedError("etcd not found; run: python -m resilient_db_testbed.ha install")
        prepare_dir(self.dir, self.owner, mode=0o700)
        peer = f"http://{self.cfg.host}:{self.cfg.etcd_peer_port}"
        if self.pid() is None:
            spawn_with_pidfile(
                [
                    str(binary), "--name", "rdb-ha", "--data-dir", str(self.dir / "data"),
                    "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", f"rdb-ha={peer}", "--initial-cluster-state", "new",
                    "--initial-cluster-token", f"rdb-ha-{self.cfg.shift}",
                    "--log-level", "warn",
                ],
                owner=self.owner,
                log=self.log,
                pidfile=self.pidfile,
            )
        wait_until(self.running, timeout=30.0, interval=0.1, what="etcd to be healthy", log=self.log)

    def stop(self) -> None:
        """Stop etcd and wait until it is gone."""
        pid = self.pid()
        if pid is not None:
            stop_pid(pid, timeout=20.0)
