"""PostgreSQL primary, streaming replica and the two PgBouncers of the test bed."""

from __future__ import annotations

import glob
import os
import shutil
import signal
from pathlib import Path

from resilient_db_testbed.bed_config import BedConfig, BedError
from resilient_db_testbed.bed_process import (
    RunAs,
    prepare_dir,
    run,
    run_as,
    spawn_daemon,
    which,
)
from resilient_db_testbed.bed_server import READY, Server

__all__ = ["PgBouncerA", "PgBouncerB", "PgPrimary", "PgReplica", "pg_bindir", "pgbouncer_binary"]


def pg_bindir() -> Path | None:
    """Return the directory of the PostgreSQL server binaries (newest version), or ``None``."""
    override = os.environ.get("RESILIENT_DB_PG_BINDIR")
    candidates = [Path(override)] if override else []
    candidates += [
        Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key)[::-1]
    ]
    initdb = which("initdb")
    if initdb is not None:
        candidates.append(initdb.parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    return None


def _version_key(path: str) -> tuple[int, ...]:
    part = Path(path).parent.name
    return tuple(int(x) for x in part.split(".") if x.isdigit())


def pgbouncer_binary() -> Path | None:
    """Return the pgbouncer executable, or ``None``."""
    return which("pgbouncer")


def _bin(name: str) -> str:
    bindir = pg_bindir()
    if bindir is None:
        raise BedError("PostgreSQL server binaries not found; run: python -m resilient_db_testbed.bed install")
    return str(bindir / name)


class _PgServer(Server):
    """What the primary and the replica share."""

    stop_signal = signal.SIGINT  # "fast" shutdown: roll back sessions, no waiting for clients

    @property
    def owner(self) -> RunAs:
        """Return the account PostgreSQL runs as."""
        return run_as("postgres")

    @property
    def data(self) -> Path:
        """Return the data directory."""
        return self.dir / "data"

    @property
    def socket_dir(self) -> Path:
        """Return the directory of the server's unix socket."""
        return self.dir / "run"

    @property
    def pidfile(self) -> Path:
        """Return the postmaster pid file."""
        return self.data / "postmaster.pid"

    @property
    def log(self) -> Path:
        """Return the server log."""
        return self.dir / "postgres.log"

    def _write_local_conf(self) -> None:
        # Port and socket live in a file of their own so that pg_basebackup's copy of the
        # primary's postgresql.conf can serve the replica unchanged.
        conf = self.data / "bed_local.conf"
        conf.write_text(
            f"port = {self.port}\nunix_socket_directories = '{self.socket_dir}'\n"
        )
        self._chown(conf)

    def _chown(self, path: Path) -> None:
        if self.owner.switches:
            assert self.owner.uid is not None and self.owner.gid is not None
            os.chown(path, self.owner.uid, self.owner.gid)

    def launch(self) -> None:
        """Start the postmaster through pg_ctl (which detaches it)."""
        prepare_dir(self.socket_dir, self.owner)
        run(
            [_bin("pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-s"],
            owner=self.owner,
            timeout=75.0,
        )

    def psql(self, sql: str, *, database: str = "postgres", timeout: float = 30.0) -> str:
        """Run ``sql`` as the bed superuser over the unix socket and return unaligned output."""
        return run(
            [
                _bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-h", str(self.socket_dir), "-p", str(self.port),
                "-U", self.cfg.pg_admin_user, "-d", database, "-f", "-",
            ],
            input_text=sql,
            timeout=timeout,
        )


class PgPrimary(_PgServer):
    """The PostgreSQL primary (scram over TCP, trust on its private unix socket)."""

    name = "pg_primary"
    role = "primary"

    def initialised(self) -> bool:
        """Tell whether initdb and the role setup completed."""
        return (self.data / "PG_VERSION").is_file() and bool(self.generation())

    def initialise(self) -> None:
        """Run initdb and write the bed's configuration."""
        shutil.rmtree(self.dir, ignore_errors=True)
        prepare_dir(self.dir, self.owner)
        pwfile = self.dir / "initdb.pw"
        pwfile.write_text(self.cfg.pg_admin_password + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        run(
            [
                _bin("initdb"), "-D", str(self.data), "-U", self.cfg.pg_admin_user,
                f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
            ],
            owner=self.owner,
            timeout=120.0,
        )
        pwfile.unlink()
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# django-resilient-db test bed\n"
                "include_if_exists = 'bed_local.conf'\n"
                "listen_addresses = '127.0.0.1'\n"
                "max_connections = 100\n"
                "shared_buffers = 32MB\n"
                "password_encryption = 'scram-sha-256'\n"
                "wal_level = replica\n"
                "max_wal_senders = 10\n"
                "max_replication_slots = 10\n"
                "wal_keep_size = '256MB'\n"
                "max_wal_size = '256MB'\n"
                "hot_standby = on\n"
                "hot_standby_feedback = on\n"
                "wal_receiver_status_interval = '1s'\n"
                "wal_retrieve_retry_interval = '500ms'\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "log_line_prefix = '%m [%p] %q%u@%d '\n"
                "log_timezone = 'UTC'\n"
                "timezone = 'UTC'\n"
            )
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "local replication all trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host replication all 127.0.0.1/32 scram-sha-256\n"
        )
        self._write_local_conf()

    def configure(self) -> None:
        """Create the bed's roles and database (idempotent)."""
        c = self.cfg
        roles = {
            c.pg_user: f"LOGIN CREATEDB PASSWORD '{c.pg_password}'",
            c.pg_admin_user: f"LOGIN SUPERUSER PASSWORD '{c.pg_admin_password}'",
            c.limited_user: f"LOGIN CONNECTION LIMIT 1 PASSWORD '{c.limited_password}'",
            c.replication_user: f"LOGIN REPLICATION PASSWORD '{c.replication_password}'",
        }
        sql = [
            f"SELECT 'CREATE ROLE {role}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_roles WHERE rolname = '{role}')\n\\gexec\n"
            f"ALTER ROLE {role} WITH {options};\n"
            for role, options in roles.items()
        ]
        sql.append(
            f"SELECT 'CREATE DATABASE {c.pg_db} OWNER {c.pg_user}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_database WHERE datname = '{c.pg_db}')\n\\gexec\n"
        )
        script = "".join(sql)
        if self._setup_done(script):
            return
        self.psql(script)
        self._mark_setup(script)


class PgReplica(_PgServer):
    """The hot-standby replica, made with ``pg_basebackup -R`` (streaming replication)."""

    name = "pg_replica"
    role = "replica"

    def __init__(self, cfg: BedConfig, primary: PgPrimary) -> None:
        super().__init__(cfg)
        self.primary = primary

    def initialised(self) -> bool:
        """Tell whether the base backup exists and was taken from the current primary."""
        built_from = self.generation()
        return (self.data / "standby.signal").is_file() and bool(built_from) and (
            built_from == self.primary.generation()
        )

    def initialise(self) -> None:
        """Take a base backup of the running primary."""
        shutil.rmtree(self.dir, ignore_errors=True)
        prepare_dir(self.dir, self.owner)
        c = self.cfg
        conninfo = (
            f"host={c.host} port={c.pg_primary_port} user={c.replication_user} "
            f"password={c.replication_password} application_name={self.name}"
        )
        run(
            [
                _bin("pg_basebackup"), "-D", str(self.data), "-R", "-X", "stream",
                "-c", "fast", "--no-sync", "-d", conninfo,
            ],
            owner=self.owner,
            timeout=120.0,
        )
        self._write_local_conf()
        (self.dir / READY).write_text(self.primary.generation() + "\n")

    def healthy(self) -> bool:
        """Tell whether the replica runs and its WAL receiver streams from the primary."""
        if not self.running():
            return False
        try:
            status = self.psql("SELECT status FROM pg_stat_wal_receiver;", timeout=5.0)
        except BedError:
            return False
        return status.strip() == "streaming"


class PgBouncer(Server):
    """A PgBouncer in session mode forwarding every database name to the primary."""

    role = "peer"
    stop_signal = signal.SIGTERM  # immediate shutdown; SIGINT would wait for clients

    @property
    def owner(self) -> RunAs:
        """Return the account PgBouncer runs as (it refuses root)."""
        return run_as("postgres", "nobody")

    @property
    def pidfile(self) -> Path:
        """Return PgBouncer's pid file."""
        return self.dir / "pgbouncer.pid"

    @property
    def log(self) -> Path:
        """Return PgBouncer's log."""
        return self.dir / "pgbouncer.log"

    def _files(self) -> dict[Path, str]:
        c = self.cfg
        users = {
            c.pg_user: c.pg_password,
            c.pg_admin_user: c.pg_admin_password,
            c.limited_user: c.limited_password,
        }
        userlist = self.dir / "userlist.txt"
        ini = (
            "[databases]\n"
            f"* = host={c.host} port={c.pg_primary_port}\n"
            "\n[pgbouncer]\n"
            f"listen_addr = {c.host}\n"
            f"listen_port = {self.port}\n"
            f"unix_socket_dir = {self.dir}\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {userlist}\n"
            f"admin_users = {c.pg_admin_user}\n"
            f"stats_users = {c.pg_admin_user}\n"
            "pool_mode = session\n"
            "max_client_conn = 400\n"
            "default_pool_size = 20\n"
            "server_login_retry = 1\n"
            "server_connect_timeout = 3\n"
            # A query held by a forgotten PAUSE fails after 20 s instead of the default 120 s.
            "query_wait_timeout = 20\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"pidfile = {self.pidfile}\n"
            f"logfile = {self.log}\n"
        )
        return {
            userlist: "".join(f'"{u}" "{p}"\n' for u, p in users.items()),
            self.dir / "pgbouncer.ini": ini,
        }

    def initialised(self) -> bool:
        """Tell whether the configuration files exist with the current content."""
        try:
            return all(path.read_text() == text for path, text in self._files().items())
        except OSError:
            return False

    def initialise(self) -> None:
        """Write pgbouncer.ini and the user list."""
        shutil.rmtree(self.dir, ignore_errors=True)
        prepare_dir(self.dir, self.owner, mode=0o700)
        for path, text in self._files().items():
            path.write_text(text)
            path.chmod(0o600)
            if self.owner.switches:
                assert self.owner.uid is not None and self.owner.gid is not None
                os.chown(path, self.owner.uid, self.owner.gid)

    def launch(self) -> None:
        """Start PgBouncer detached."""
        binary = pgbouncer_binary()
        if binary is None:
            raise BedError("pgbouncer not found; run: python -m resilient_db_testbed.bed install")
        spawn_daemon(
            [str(binary), str(self.dir / "pgbouncer.ini")],
            owner=self.owner,
            log=self.dir / "stderr.log",
            cwd=self.dir,
        )


class PgBouncerA(PgBouncer):
    """PgBouncer peer A."""

    name = "pgbouncer_a"


class PgBouncerB(PgBouncer):
    """PgBouncer peer B."""

    name = "pgbouncer_b"
