"""MariaDB primary, GTID replica and the two proxy peers in front of the primary."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import sys
from pathlib import Path

import resilient_db_testbed
from resilient_db_testbed.bed_config import BedConfig, BedError
from resilient_db_testbed.bed_process import (
    RunAs,
    prepare_dir,
    run,
    run_as,
    spawn_daemon,
    wait_until,
    which,
)
from resilient_db_testbed.bed_server import Server

__all__ = ["MariaPeerA", "MariaPeerB", "MariaPrimary", "MariaReplica", "mariadb_binaries"]

READY = ".ready"


def mariadb_binaries() -> dict[str, Path | None]:
    """Return the server, installer and client programs (``None`` when missing)."""
    return {
        "server": which("mariadbd", "mysqld"),
        "install": which("mariadb-install-db", "mysql_install_db"),
        "client": which("mariadb", "mysql"),
    }


def _binary(kind: str) -> str:
    found = mariadb_binaries()[kind]
    if found is None:
        raise BedError("MariaDB programs not found; run: python -m resilient_db_testbed.bed install")
    return str(found)


class _MariaServer(Server):
    """What the MariaDB primary and replica share."""

    server_id = 0
    read_only = False

    @property
    def owner(self) -> RunAs:
        """Return the account MariaDB runs as."""
        return run_as("mysql")

    @property
    def data(self) -> Path:
        """Return the data directory."""
        return self.dir / "data"

    @property
    def socket(self) -> Path:
        """Return the unix socket (root has socket-less password access through it)."""
        return self.dir / "mariadb.sock"

    @property
    def pidfile(self) -> Path:
        """Return the server's pid file."""
        return self.dir / "mariadb.pid"

    @property
    def log(self) -> Path:
        """Return the server's error log."""
        return self.dir / "mariadb.log"

    @property
    def cnf(self) -> Path:
        """Return the option file the server and the installer read."""
        return self.dir / "my.cnf"

    def _write_cnf(self) -> None:
        lines = [
            "[mariadbd]",
            f"datadir = {self.data}",
            f"socket = {self.socket}",
            f"pid-file = {self.pidfile}",
            f"log-error = {self.log}",
            f"tmpdir = {self.dir / 'tmp'}",
            f"port = {self.port}",
            f"bind-address = {self.cfg.host}",
            "skip-name-resolve",
            "skip-external-locking",
            f"server-id = {self.server_id}",
            "log-bin = binlog",
            "relay-log = relay-bin",
            "binlog-format = ROW",
            "log-slave-updates = ON",
            "sync-binlog = 0",
            "slave-net-timeout = 5",
            f"read-only = {'ON' if self.read_only else 'OFF'}",
            "character-set-server = utf8mb4",
            "collation-server = utf8mb4_unicode_ci",
            "max-connections = 200",
            "performance-schema = OFF",
            "innodb-buffer-pool-size = 32M",
            "innodb-log-file-size = 16M",
            "innodb-log-buffer-size = 4M",
            "innodb-data-file-path = ibdata1:12M:autoextend",
            "innodb-flush-log-at-trx-commit = 2",
            "innodb-doublewrite = 0",
            "table-open-cache = 400",
            "",
        ]
        self.cnf.write_text("\n".join(lines))

    def generation(self) -> str:
        """Return the token identifying this server's data (``""`` when not set up)."""
        try:
            return (self.dir / READY).read_text().strip()
        except OSError:
            return ""

    def initialise(self) -> None:
        """Create an empty data directory with mariadb-install-db."""
        shutil.rmtree(self.dir, ignore_errors=True)
        prepare_dir(self.dir, self.owner)
        prepare_dir(self.dir / "tmp", self.owner, mode=0o700)
        self._write_cnf()
        run(
            [
                _binary("install"), f"--defaults-file={self.cnf}",
                "--auth-root-authentication-method=normal", "--skip-test-db",
                "--skip-name-resolve",
            ],
            owner=self.owner,
            timeout=120.0,
            cwd=self.dir,
        )

    def launch(self) -> None:
        """Start mariadbd detached."""
        spawn_daemon(
            [_binary("server"), f"--defaults-file={self.cnf}"],
            owner=self.owner,
            log=self.dir / "stderr.log",
            cwd=self.dir,
        )

    def sql(self, statements: str, *, timeout: float = 30.0) -> str:
        """Run ``statements`` as root over the unix socket; return tab-separated rows."""
        return run(
            [
                _binary("client"), "--no-defaults", "--protocol=socket",
                f"--socket={self.socket}", "--user=root", "--batch", "--skip-column-names",
                "--connect-timeout=5",
            ],
            input_text=statements,
            timeout=timeout,
        )

    def slave_status(self) -> dict[str, str]:
        """Return ``SHOW SLAVE STATUS`` as a dict (empty when not a replica)."""
        out = run(
            [
                _binary("client"), "--no-defaults", "--protocol=socket",
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

    def configure(self) -> None:
        """Create the bed's accounts and database (binlogged, so the replica gets them)."""
        c = self.cfg
        hosts = ("127.0.0.1", "localhost")
        sql = [f"CREATE DATABASE IF NOT EXISTS `{c.maria_db}`;"]
        for host in hosts:
            account = f"'{c.maria_user}'@'{host}'"
            sql += [
                f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{c.maria_password}';",
                f"GRANT ALL ON `{c.maria_db}`.* TO {account};",
                f"GRANT ALL ON `test_{c.maria_db}`.* TO {account};",
                f"GRANT ALL ON `test\\_%`.* TO {account};",
                # Lag probes read SHOW SLAVE STATUS as the application user,
                # as they would in production: document-worthy, not admin-only.
                f"GRANT SLAVE MONITOR ON *.* TO {account};",
            ]
            admin = f"'{c.maria_admin_user}'@'{host}'"
            sql += [
                f"CREATE USER IF NOT EXISTS {admin} IDENTIFIED BY '{c.maria_admin_password}';",
                f"GRANT ALL PRIVILEGES ON *.* TO {admin} WITH GRANT OPTION;",
            ]
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
