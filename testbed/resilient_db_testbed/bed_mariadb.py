"""MariaDB primary, GTID replica and the two proxy peers in front of the primary."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import resilient_db_testbed
from resilient_db_testbed.bed_config import BedConfig, BedError
from resilient_db_testbed.bed_process import prepare_dir, run, spawn_daemon, wait_until
from resilient_db_testbed.bed_server import READY, Server
from resilient_db_testbed.mariadbd import MariadbdFiles, account_sql, mariadb_binary

__all__ = ["MariaPeerA", "MariaPeerB", "MariaPrimary", "MariaReplica"]


class _MariaServer(MariadbdFiles, Server):
    """What the MariaDB primary and replica share."""

    server_id = 0
    read_only = False

    def cnf_lines(self) -> list[str]:
        """Return the option file's lines: binary log, GTID replication, read-only or not."""
        return [
            *self.base_cnf_lines(self.cfg.host),
            f"server-id = {self.server_id}",
            "log-bin = binlog",
            "relay-log = relay-bin",
            "log-slave-updates = ON",
            "sync-binlog = 0",
            "slave-net-timeout = 5",
            f"read-only = {'ON' if self.read_only else 'OFF'}",
            "innodb-log-buffer-size = 4M",
            "innodb-data-file-path = ibdata1:12M:autoextend",
            "table-open-cache = 400",
        ]

    def launch(self) -> None:
        """Start mariadbd detached."""
        self.spawn()

    def slave_status(self) -> dict[str, str]:
        """Return ``SHOW SLAVE STATUS`` as a dict (empty when not a replica)."""
        out = run(
            [
                mariadb_binary("client"), "--no-defaults", "--protocol=socket",
                f"--socket={self.socket}", "--user=root", "--batch", "--vertical",
                "--connect-timeout=2", "-e", "SHOW SLAVE STATUS",
            ],
            timeout=10.0,
        )
        status: dict[str, str] = {}
        for line in out.splitlines():
            key, sep, value = line.strip().partition(": ")
            if sep:
                status[key] = value
        return status


class MariaPrimary(_MariaServer):
    """The MariaDB primary, binary log on, GTIDs on."""

    name = "maria_primary"
    role = "primary"
    server_id = 1

    def initialised(self) -> bool:
        """Tell whether the data directory exists and the accounts were created."""
        return (self.data / "mysql").is_dir() and bool(self.generation())

    def configure(self) -> None:
        """Create the bed's accounts and database (binlogged, so the replica gets them)."""
        c = self.cfg
        hosts = ("127.0.0.1", "localhost")
        sql = [f"CREATE DATABASE IF NOT EXISTS `{c.maria_db}`;"]
        for host in hosts:
            sql += account_sql(c, host)
            limited = f"'{c.limited_user}'@'{host}'"
            sql += [
                f"CREATE USER IF NOT EXISTS {limited} IDENTIFIED BY '{c.limited_password}' "
                "WITH MAX_USER_CONNECTIONS 1;",
                f"GRANT ALL ON `{c.maria_db}`.* TO {limited};",
            ]
        repl = f"'{c.replication_user}'@'{c.host}'"
        sql += [
            f"CREATE USER IF NOT EXISTS {repl} IDENTIFIED BY '{c.replication_password}';",
            f"GRANT REPLICATION SLAVE ON *.* TO {repl};",
        ]
        script = "\n".join(sql) + "\n"
        if self._setup_done(script):
            return
        self.sql(script)
        self._mark_setup(script)


class MariaReplica(_MariaServer):
    """The read-only MariaDB replica, replicating the primary with GTIDs (``slave_pos``)."""

    name = "maria_replica"
    role = "replica"
    server_id = 2
    read_only = True

    def __init__(self, cfg: BedConfig, primary: MariaPrimary) -> None:
        super().__init__(cfg)
        self.primary = primary

    def initialised(self) -> bool:
        """Tell whether the data exists and replicates the current primary."""
        built_from = self.generation()
        return (self.data / "mysql").is_dir() and bool(built_from) and (
            built_from == self.primary.generation()
        )

    def configure(self) -> None:
        """Point the replica at the primary, start replicating and wait until caught up."""
        if not self.generation():
            c = self.cfg
            self.sql(
                "STOP SLAVE;\n"
                f"CHANGE MASTER TO MASTER_HOST='{c.host}', MASTER_PORT={c.maria_primary_port}, "
                f"MASTER_USER='{c.replication_user}', "
                f"MASTER_PASSWORD='{c.replication_password}', MASTER_USE_GTID=slave_pos, "
                "MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=1;\n"
                "START SLAVE;\n"
            )
            self.wait_healthy(timeout=60.0)
            self.catch_up()
            (self.dir / READY).write_text(self.primary.generation() + "\n")

    def catch_up(self, timeout: float = 30.0) -> None:
        """Wait (bounded) until the replica applied everything the primary logged so far."""
        position = self.primary.sql("SELECT @@gtid_binlog_pos;").strip()
        if not position:
            return
        reached = self.sql(f"SELECT MASTER_GTID_WAIT('{position}', {timeout:.0f});").strip()
        if reached != "0":
            raise BedError(f"{self.name} did not reach the primary's position {position}")

    def healthy(self) -> bool:
        """Tell whether both replication threads run."""
        if not self.running():
            return False
        try:
            status = self.slave_status()
        except BedError:
            return False
        return status.get("Slave_IO_Running") == "Yes" and status.get("Slave_SQL_Running") == "Yes"


class _MariaPeer(Server):
    """One of the project's chaos proxies, as a separate process, in front of the primary."""

    role = "peer"
    start_timeout = 20.0

    @property
    def pidfile(self) -> Path:
        """Return the proxy's pid file."""
        return self.dir / "proxy.pid"

    @property
    def log(self) -> Path:
        """Return the proxy's output."""
        return self.dir / "proxy.log"

    def initialised(self) -> bool:
        """Tell whether the working directory exists."""
        return self.dir.is_dir()

    def initialise(self) -> None:
        """Create the working directory."""
        prepare_dir(self.dir, self.owner)

    def launch(self) -> None:
        """Start ``python -m resilient_db_testbed.proxy`` detached."""
        package_root = Path(resilient_db_testbed.__file__).resolve().parent.parent
        path = os.pathsep.join(p for p in (str(package_root), os.environ.get("PYTHONPATH")) if p)
        c = self.cfg
        spawn_daemon(
            [
                sys.executable, "-m", "resilient_db_testbed.proxy",
                "--listen", f"{c.host}:{self.port}",
                "--target", f"{c.host}:{c.maria_primary_port}",
                "--pidfile", str(self.pidfile),
            ],
            owner=self.owner,
            log=self.log,
            env={"PYTHONPATH": path, "PYTHONUNBUFFERED": "1"},
            cwd=self.dir,
        )
        wait_until(
            lambda: self.pid() is not None,
            timeout=self.start_timeout,
            interval=0.05,
            what=f"{self.name} to write its pid file",
            log=self.log,
        )


class MariaPeerA(_MariaPeer):
    """MariaDB peer A (proxy)."""

    name = "maria_peer_a"


class MariaPeerB(_MariaPeer):
    """MariaDB peer B (proxy)."""

    name = "maria_peer_b"
