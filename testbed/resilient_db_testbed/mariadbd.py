"""One mariadbd's files and the MariaDB programs run on them.

Shared by the bed's primary and replica (``bed_mariadb.py``) and the Galera
nodes (``ha_galera.py``): where a server keeps its data, socket, pid file, log
and option file, the options every one of them runs with, creating its data
with mariadb-install-db, starting it, and running SQL as root over its socket.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from resilient_db_testbed.bed_config import BedConfig, BedError
from resilient_db_testbed.bed_process import RunAs, prepare_dir, run, run_as, spawn_daemon, which

__all__ = ["COMMON_OPTIONS", "MariadbdFiles", "account_sql", "mariadb_binaries", "mariadb_binary"]

#: Options of every mariadbd the bed runs: fast rather than durable (the bed never
#: survives an OS crash it never has), small, and utf8mb4 like a Django site's.
COMMON_OPTIONS = (
    "skip-name-resolve",
    "skip-external-locking",
    "binlog-format = ROW",
    "character-set-server = utf8mb4",
    "collation-server = utf8mb4_unicode_ci",
    "max-connections = 200",
    "performance-schema = OFF",
    "innodb-buffer-pool-size = 32M",
    "innodb-log-file-size = 16M",
    "innodb-flush-log-at-trx-commit = 2",
    "innodb-doublewrite = 0",
)


def mariadb_binaries() -> dict[str, Path | None]:
    """Return the server, installer and client programs (``None`` when missing)."""
    return {
        "server": which("mariadbd", "mysqld"),
        "install": which("mariadb-install-db", "mysql_install_db"),
        "client": which("mariadb", "mysql"),
    }


def mariadb_binary(kind: str) -> str:
    """Return the ``server``, ``install`` or ``client`` program, or raise ``BedError``."""
    found = mariadb_binaries()[kind]
    if found is None:
        raise BedError("MariaDB programs not found; run: python -m resilient_db_testbed.bed install")
    return str(found)


def account_sql(c: BedConfig, host: str) -> list[str]:
    """Return the statements creating the application user and the admin at ``host``."""
    account = f"'{c.maria_user}'@'{host}'"
    admin = f"'{c.maria_admin_user}'@'{host}'"
    return [
        f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{c.maria_password}';",
        f"GRANT ALL ON `{c.maria_db}`.* TO {account};",
        f"GRANT ALL ON `test_{c.maria_db}`.* TO {account};",
        f"GRANT ALL ON `test\\_%`.* TO {account};",
        # Lag probes read SHOW SLAVE STATUS as the application user,
        # as they would in production: document-worthy, not admin-only.
        f"GRANT SLAVE MONITOR ON *.* TO {account};",
        f"CREATE USER IF NOT EXISTS {admin} IDENTIFIED BY '{c.maria_admin_password}';",
        f"GRANT ALL PRIVILEGES ON *.* TO {admin} WITH GRANT OPTION;",
    ]


class MariadbdFiles:
    """The files of one mariadbd in ``self.dir`` and the programs run on them."""

    dir: Path
    port: int

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

    def cnf_lines(self) -> list[str]:
        """Return the lines of the option file (the server's own options after the common ones)."""
        raise NotImplementedError

    def base_cnf_lines(self, host: str) -> list[str]:
        """Return the ``[mariadbd]`` header, the server's paths, port and the common options."""
        return [
            "[mariadbd]",
            f"datadir = {self.data}",
            f"socket = {self.socket}",
            f"pid-file = {self.pidfile}",
            f"log-error = {self.log}",
            f"tmpdir = {self.dir / 'tmp'}",
            f"port = {self.port}",
            f"bind-address = {host}",
            *COMMON_OPTIONS,
        ]

    def write_cnf(self) -> None:
        """Write the option file."""
        self.cnf.write_text("\n".join([*self.cnf_lines(), ""]))

    def initialise(self) -> None:
        """Create an empty data directory with mariadb-install-db."""
        shutil.rmtree(self.dir, ignore_errors=True)
        prepare_dir(self.dir, self.owner)
        prepare_dir(self.dir / "tmp", self.owner, mode=0o700)
        self.write_cnf()
        run(
            [
                mariadb_binary("install"), f"--defaults-file={self.cnf}",
                "--auth-root-authentication-method=normal", "--skip-test-db",
                "--skip-name-resolve",
            ],
            owner=self.owner,
            timeout=120.0,
            cwd=self.dir,
        )

    def spawn(self, *extra: str) -> None:
        """Start mariadbd detached with the option file (and ``extra`` arguments)."""
        spawn_daemon(
            [mariadb_binary("server"), f"--defaults-file={self.cnf}", *extra],
            owner=self.owner,
            log=self.dir / "stderr.log",
            cwd=self.dir,
        )

    def sql(self, statements: str, *, timeout: float = 30.0) -> str:
        """Run ``statements`` as root over the unix socket; return tab-separated rows."""
        return run(
            [
                mariadb_binary("client"), "--no-defaults", "--protocol=socket",
                f"--socket={self.socket}", "--user=root", "--batch", "--skip-column-names",
                "--connect-timeout=5",
            ],
            input_text=statements,
            timeout=timeout,
        )
