"""A three-node MariaDB Galera cluster with Debian's ``galera-4`` provider.

The first node bootstraps the cluster (``--wsrep-new-cluster``); the others
join it and receive their data by rsync SST. Every node runs as ``mysql`` on
loopback. Fault helpers: kill a node (SIGKILL), isolate a node into a
non-Primary component (``gmcast.isolate=1``: it still accepts TCP, answers
``ERROR 1047`` and has ``wsrep_ready`` OFF), desync a node, restart a node.
"""

from __future__ import annotations

import signal
from pathlib import Path

from resilient_db_testbed.bed_config import BedError
from resilient_db_testbed.bed_process import (
    RunAs,
    log_tail,
    port_open,
    prepare_dir,
    read_pid,
    stop_pid,
    wait_until,
)
from resilient_db_testbed.ha_config import NODES, HaConfig
from resilient_db_testbed.ha_process import gone, kill_tree
from resilient_db_testbed.mariadbd import MariadbdFiles, account_sql

__all__ = ["GALERA_PROVIDER", "GaleraCluster", "GaleraNode", "galera_provider"]

GALERA_PROVIDER = Path("/usr/lib/galera/libgalera_smm.so")

#: Membership timings: a silent node is suspected after 2 s and dropped after 4 s
#: (Galera's defaults are 5 s and 15 s); they set Galera's own recovery time.
EVS_OPTIONS = "evs.keepalive_period=PT0.5S;evs.suspect_timeout=PT2S;evs.inactive_timeout=PT4S;evs.install_timeout=PT4S"


def galera_provider() -> Path | None:
    """Return the Galera provider library, or ``None`` when ``galera-4`` is missing."""
    return GALERA_PROVIDER if GALERA_PROVIDER.is_file() else None


class GaleraNode(MariadbdFiles):
    """One mariadbd with the Galera provider loaded."""

    def __init__(self, cfg: HaConfig, name: str) -> None:
        self.cfg = cfg
        self.name = name
        self.dir = cfg.root / name
        self.port = cfg.node_port(name)

    def pid(self) -> int | None:
        """Return mariadbd's pid, or ``None``."""
        return read_pid(self.pidfile)

    def running(self) -> bool:
        """Tell whether mariadbd runs and accepts TCP connections."""
        return self.pid() is not None and port_open(self.cfg.host, self.port)

    def cnf_lines(self) -> list[str]:
        """Return the option file's lines: InnoDB as Galera needs it, the provider and its peers."""
        c = self.cfg
        members = ",".join(f"{c.host}:{c.gcomm_port(n)}" for n in NODES)
        options = ";".join(
            [
                f"gmcast.listen_addr=tcp://{c.host}:{c.gcomm_port(self.name)}",
                f"ist.recv_addr={c.host}:{c.ist_port(self.name)}",
                f"base_host={c.host}",
                f"base_port={c.gcomm_port(self.name)}",
                EVS_OPTIONS,
                "gcache.size=64M",
            ]
        )
        return [
            *self.base_cnf_lines(c.host),
            "default-storage-engine = InnoDB",
            "innodb-autoinc-lock-mode = 2",
            "wsrep-on = ON",
            f"wsrep-provider = {GALERA_PROVIDER}",
            "wsrep-cluster-name = rdb_ha",
            f"wsrep-cluster-address = gcomm://{members}",
            f"wsrep-node-name = {self.name}",
            f"wsrep-node-address = {c.host}:{c.gcomm_port(self.name)}",
            f"wsrep-node-incoming-address = {c.host}:{self.port}",
            f'wsrep-provider-options = "{options}"',
            "wsrep-sst-method = rsync",
            f"wsrep-sst-receive-address = {c.host}:{c.sst_port(self.name)}",
            "wsrep-slave-threads = 2",
        ]

    def launch(self, *, bootstrap: bool = False) -> None:
        """Start mariadbd detached (``bootstrap``: as the first node of a new cluster)."""
        self.spawn(*(["--wsrep-new-cluster"] if bootstrap else []))

    def start(self, *, bootstrap: bool = False, timeout: float = 120.0) -> None:
        """Start the node unless it runs and wait (bounded) until it is Synced."""
        if self.pid() is None:
            self.pidfile.unlink(missing_ok=True)
            self.launch(bootstrap=bootstrap)
            # mariadbd writes its pid file only once it has read its options.
            wait_until(
                lambda: self.pid() is not None, timeout=30.0, interval=0.1,
                what=f"{self.name} to write its pid file", log=self.log,
            )
        died: list[bool] = []

        def synced_or_dead() -> bool:
            if self.pid() is None:
                died.append(True)
                return True
            return self.synced()

        wait_until(
            synced_or_dead, timeout=timeout, interval=0.2,
            what=f"{self.name} to be Synced", log=self.log,
        )
        if died:
            raise BedError(f"{self.name} exited while starting\n{log_tail(self.log)}")

    def stop(self) -> None:
        """Stop the node and wait until it is gone."""
        pid = self.pid()
        if pid is not None:
            stop_pid(pid, timeout=60.0)

    def kill(self) -> None:
        """SIGKILL the node: a crashed server."""
        pid = self.pid()
        if pid is None:
            return
        kill_tree(pid, signal.SIGKILL)
        wait_until(lambda: gone([pid]), timeout=10.0, what=f"{self.name} to die")

    def status(self) -> dict[str, str]:
        """Return the node's ``wsrep_%`` status variables (empty when it does not answer)."""
        try:
            out = self.sql("SHOW GLOBAL STATUS LIKE 'wsrep\\_%';", timeout=10.0)
        except BedError:
            return {}
        found: dict[str, str] = {}
        for line in out.splitlines():
            key, _, value = line.partition("\t")
            found[key] = value
        return found

    def synced(self) -> bool:
        """Tell whether the node runs, is in the Primary component, ready and Synced."""
        if not self.running():
            return False
        s = self.status()
        return (
            s.get("wsrep_ready") == "ON"
            and s.get("wsrep_cluster_status") == "Primary"
            and s.get("wsrep_local_state_comment") == "Synced"
        )


class GaleraCluster:
    """The three nodes and their fault helpers."""

    def __init__(self, cfg: HaConfig) -> None:
        self.cfg = cfg
        self.nodes = {name: GaleraNode(cfg, name) for name in NODES}

    def node(self, name: str) -> GaleraNode:
        """Return the node called ``name``."""
        return self.nodes[name]

    def healthy(self) -> bool:
        """Tell whether all three nodes are Synced in a Primary component of three."""
        return all(n.synced() for n in self.nodes.values()) and (
            self.nodes[NODES[0]].status().get("wsrep_cluster_size") == str(len(NODES))
        )

    def up(self) -> None:
        """Bootstrap the cluster unless some node runs; join the missing nodes."""
        if galera_provider() is None:
            raise BedError("the Galera provider is missing; run: python -m resilient_db_testbed.ha install")
        prepare_dir(self.cfg.root, RunAs())
        running = [n for n in self.nodes.values() if n.pid() is not None]
        if not running:
            # Nothing runs: a cluster cannot be resumed safely from three stopped
            # nodes without choosing the most advanced one, so it is rebuilt.
            for node in self.nodes.values():
                node.initialise()
            first = self.nodes[NODES[0]]
            first.start(bootstrap=True)
            self._configure(first)
        for node in self.nodes.values():
            if node.pid() is None and not (node.data / "mysql").is_dir():
                node.initialise()
            node.start()
        wait_until(self.healthy, timeout=60.0, interval=0.2, what="the Galera cluster to be whole")

    def _configure(self, node: GaleraNode) -> None:
        c = self.cfg.bed
        sql = [f"CREATE DATABASE IF NOT EXISTS `{c.maria_db}`;"]
        for host in ("127.0.0.1", "localhost"):
            sql += account_sql(c, host)
        node.sql("\n".join(sql) + "\n")

    def down(self) -> None:
        """Stop the nodes."""
        for node in self.nodes.values():
            node.stop()

    def logs(self) -> str:
        """Return the tail of every node's log (for failure messages)."""
        return "\n".join(f"--- {n.log} ---\n{log_tail(n.log, 10)}" for n in self.nodes.values())

    # ----- faults -----------------------------------------------------------

    def kill(self, name: str) -> None:
        """SIGKILL node ``name``."""
        self.nodes[name].kill()

    def restart(self, name: str, timeout: float = 120.0) -> None:
        """Start node ``name`` again (it rejoins by IST or SST) and wait until Synced."""
        self.nodes[name].start(timeout=timeout)

    def isolate(self, name: str) -> None:
        """Cut node ``name`` off the group: it goes non-Primary but keeps accepting TCP."""
        node = self.nodes[name]
        node.sql("SET GLOBAL wsrep_provider_options='gmcast.isolate=1';")
        wait_until(
            lambda: node.status().get("wsrep_ready") == "OFF", timeout=15.0, interval=0.05,
            what=f"{name} to leave the Primary component", log=node.log,
        )

    def rejoin(self, name: str, timeout: float = 60.0) -> None:
        """Undo :meth:`isolate` and wait (bounded) until the node is Synced again."""
        node = self.nodes[name]
        node.sql("SET GLOBAL wsrep_provider_options='gmcast.isolate=0';")
        wait_until(node.synced, timeout=timeout, interval=0.05, what=f"{name} to be Synced", log=node.log)

    def desync(self, name: str, on: bool = True) -> None:
        """Put node ``name`` into (or out of) the Donor/Desynced state."""
        self.nodes[name].sql(f"SET GLOBAL wsrep_desync = {'ON' if on else 'OFF'};")
