"""A Patroni-managed PostgreSQL cluster (three members) on a single-node etcd.

etcd comes from Debian's ``etcd-server`` package and runs as the ``etcd``
account; Patroni comes from the package index, in a virtualenv the bed
creates, and runs (with its postmasters) as ``postgres``. Fault helpers: kill
the leader (Patroni and its postmaster, SIGKILL), a planned switchover through
Patroni's REST API, restart a killed member (it rejoins as a replica), pause
replay on a replica.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from resilient_db_testbed.bed_config import BedError
from resilient_db_testbed.bed_pg import pg_bindir
from resilient_db_testbed.bed_process import (
    RunAs,
    log_tail,
    port_open,
    prepare_dir,
    read_pid,
    run,
    run_as,
    stop_pid,
    wait_until,
)
from resilient_db_testbed.ha_config import MEMBERS, HaConfig
from resilient_db_testbed.ha_etcd import Etcd
from resilient_db_testbed.ha_patroni_conf import patroni_conf
from resilient_db_testbed.ha_process import gone, kill_tree, spawn_with_pidfile

__all__ = ["Etcd", "PatroniCluster", "PatroniMember", "ensure_patroni_venv"]

PATRONI_REQUIREMENT = "patroni[etcd3]>=3.3"


def ensure_patroni_venv(cfg: HaConfig) -> None:
    """Create the virtualenv with Patroni (from the package index) unless it exists."""
    if cfg.patroni_bin.is_file() and cfg.patronictl_bin.is_file():
        return
    venv = cfg.patroni_venv
    shutil.rmtree(venv, ignore_errors=True)
    # The system interpreter, not this process's: Patroni runs as ``postgres``,
    # which may not reach an interpreter under another user's home (pyenv).
    system = Path("/usr/bin/python3")
    interpreter = str(system) if system.is_file() else sys.executable
    run([interpreter, "-m", "venv", str(venv)], timeout=120.0)
    # psycopg2-binary: Patroni needs a driver, and the binary wheel builds nothing.
    run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
         PATRONI_REQUIREMENT, "psycopg2-binary"],
        timeout=600.0,
    )
    venv.chmod(0o755)


class PatroniMember:
    """One Patroni daemon and the PostgreSQL it manages."""

    def __init__(self, cfg: HaConfig, name: str) -> None:
        self.cfg = cfg
        self.name = name
        self.dir = cfg.root / name
        self.data = self.dir / "data"
        self.port = cfg.member_port(name)
        self.rest_port = cfg.rest_port(name)
        self.pidfile = self.dir / "patroni.pid"
        self.log = self.dir / "patroni.log"
        self.yaml = self.dir / "patroni.yml"

    @property
    def owner(self) -> RunAs:
        """Return the account Patroni and PostgreSQL run as."""
        return run_as("postgres")

    @property
    def socket_dir(self) -> Path:
        """Return the directory of the member's unix socket."""
        return self.dir / "run"

    def patroni_pid(self) -> int | None:
        """Return the Patroni daemon's pid, or ``None``."""
        return read_pid(self.pidfile)

    def postmaster_pid(self) -> int | None:
        """Return the postmaster's pid, or ``None``."""
        return read_pid(self.data / "postmaster.pid")

    def rest(self, path: str, *, timeout: float = 2.0) -> Any:
        """GET ``path`` from the member's REST API and return the decoded JSON (any status)."""
        url = f"http://{self.cfg.host}:{self.rest_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            # 503 is how /primary and /replica say "not me"; the body still says why.
            body = exc.read()
            exc.close()
            return json.loads(body or b"null")

    def running(self) -> bool:
        """Tell whether Patroni runs and its REST API accepts connections."""
        return self.patroni_pid() is not None and port_open(self.cfg.host, self.rest_port)

    def _write_yaml(self) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise BedError("PostgreSQL server binaries not found; run: python -m resilient_db_testbed.bed install")
        conf = patroni_conf(self.cfg, self.name, self.dir, bindir)
        # JSON is YAML: no YAML writer needed on the bed's side.
        self.yaml.write_text(json.dumps(conf, indent=2) + "\n")

    def start(self) -> None:
        """Start Patroni (it starts, creates or clones PostgreSQL itself)."""
        if self.patroni_pid() is not None:
            return
        owner = self.owner
        prepare_dir(self.dir, owner, mode=0o700)
        prepare_dir(self.socket_dir, owner)
        self._write_yaml()
        if owner.switches:
            assert owner.uid is not None and owner.gid is not None
            os.chown(self.yaml, owner.uid, owner.gid)
        spawn_with_pidfile(
            [str(self.cfg.patroni_bin), str(self.yaml)],
            owner=owner,
            log=self.log,
            pidfile=self.pidfile,
            env={"PYTHONUNBUFFERED": "1"},
        )
        wait_until(
            self.running, timeout=30.0, interval=0.1,
            what=f"{self.name}'s REST API", log=self.log,
        )

    def stop(self) -> None:
        """Stop Patroni (it stops its PostgreSQL first) and wait until both are gone."""
        pid = self.patroni_pid()
        if pid is not None:
            stop_pid(pid, timeout=60.0)
        postmaster = self.postmaster_pid()
        if postmaster is not None:
            stop_pid(postmaster, sig=signal.SIGINT, timeout=30.0)

    def kill(self) -> None:
        """SIGKILL Patroni and its postmaster with every backend: a crashed node."""
        pids = [p for p in (self.patroni_pid(), self.postmaster_pid()) if p is not None]
        for pid in pids:
            kill_tree(pid)
        wait_until(lambda: gone(pids), timeout=10.0, what=f"{self.name} to die")

    def psql(self, sql: str, *, database: str = "postgres", timeout: float = 30.0) -> str:
        """Run ``sql`` as the superuser over the member's unix socket."""
        bindir = pg_bindir()
        assert bindir is not None
        return run(
            [
                str(bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-h", str(self.socket_dir), "-p", str(self.port),
                "-U", self.cfg.bed.pg_admin_user, "-d", database, "-f", "-",
            ],
            input_text=sql,
            timeout=timeout,
        )


class PatroniCluster:
    """The three members and etcd, with the fault helpers the tests use."""

    def __init__(self, cfg: HaConfig) -> None:
        self.cfg = cfg
        self.etcd = Etcd(cfg)
        self.members = {name: PatroniMember(cfg, name) for name in MEMBERS}

    def member(self, name: str) -> PatroniMember:
        """Return the member called ``name``."""
        return self.members[name]

    def topology(self) -> dict[str, Any]:
        """Return Patroni's ``/cluster`` from any member that answers (``{}`` if none)."""
        for member in self.members.values():
            if not member.running():
                continue
            try:
                found = member.rest("/cluster", timeout=1.0)
            except (OSError, ValueError):
                continue
            if isinstance(found, dict):
                return found
        return {}

    def leader(self) -> str | None:
        """Return the name of the member Patroni calls leader and that runs, or ``None``."""
        for entry in self.topology().get("members", []):
            if entry.get("role") == "leader" and entry.get("state") == "running":
                return str(entry["name"])
        return None

    def replicas_streaming(self) -> list[str]:
        """Return the members that stream from the leader."""
        return [
            str(e["name"]) for e in self.topology().get("members", [])
            if e.get("role") in {"replica", "sync_standby"} and e.get("state") == "streaming"
        ]

    def healthy(self) -> bool:
        """Tell whether there is a leader and every other member streams."""
        return self.leader() is not None and len(self.replicas_streaming()) == len(MEMBERS) - 1

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Wait (bounded) until a leader runs and both replicas stream."""
        logs = "\n".join(
            f"--- {m.log} ---\n{log_tail(m.log, 10)}" for m in self.members.values()
        )
        try:
            wait_until(self.healthy, timeout=timeout, interval=0.2, what="the Patroni cluster")
        except BedError as exc:
            raise BedError(f"{exc}\n{logs}") from exc

    def up(self) -> None:
        """Bring etcd and the three members up, create the app's role and database."""
        ensure_patroni_venv(self.cfg)
        prepare_dir(self.cfg.root, RunAs())
        self.etcd.start()
        for member in self.members.values():
            member.start()
        self.wait_healthy()
        self._configure()

    def _configure(self) -> None:
        bed = self.cfg.bed
        leader = self.leader()
        assert leader is not None
        sql = (
            "DO $$BEGIN\n"
            f"IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{bed.pg_user}') THEN\n"
            f"  CREATE ROLE {bed.pg_user} LOGIN CREATEDB PASSWORD '{bed.pg_password}';\n"
            "END IF; END$$;\n"
        )
        self.members[leader].psql(sql)
        exists = self.members[leader].psql(
            f"SELECT 1 FROM pg_database WHERE datname = '{bed.pg_db}';"
        ).strip()
        if not exists:
            self.members[leader].psql(f"CREATE DATABASE {bed.pg_db} OWNER {bed.pg_user};")

    def down(self) -> None:
        """Stop the members, then etcd."""
        for member in self.members.values():
            member.stop()
        self.etcd.stop()

    # ----- faults -----------------------------------------------------------

    def kill_leader(self) -> str:
        """SIGKILL the leader's Patroni and PostgreSQL; return its name."""
        leader = self.leader()
        if leader is None:
            raise BedError("the Patroni cluster has no leader to kill")
        self.members[leader].kill()
        return leader

    def wait_new_leader(self, old: str, timeout: float = 60.0) -> str:
        """Wait (bounded) until a member other than ``old`` leads; return it."""
        found: list[str] = []

        def promoted() -> bool:
            now = self.leader()
            if now is not None and now != old:
                found.append(now)
                return True
            return False

        wait_until(promoted, timeout=timeout, interval=0.05, what=f"a leader other than {old}")
        return found[-1]

    def switchover(self, candidate: str | None = None, timeout: float = 60.0) -> str:
        """Run a planned switchover through the REST API; return the new leader."""
        leader = self.leader()
        if leader is None:
            raise BedError("no leader to switch over from")
        if candidate is None:
            # In synchronous mode Patroni switches over only to a synchronous standby.
            members = self.topology().get("members", [])
            sync = [str(m["name"]) for m in members if m.get("role") == "sync_standby"]
            candidate = (sync or [n for n in self.replicas_streaming() if n != leader])[0]
        body = json.dumps({"leader": leader, "candidate": candidate}).encode()
        request = urllib.request.Request(
            f"http://{self.cfg.host}:{self.members[leader].rest_port}/switchover",
            data=body, method="POST", headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            answer = resp.read().decode(errors="replace")
            if resp.status != 200:
                raise BedError(f"switchover refused: {resp.status} {answer}")
        self.wait_new_leader(leader, timeout=timeout)
        return candidate

    def restart_member(self, name: str, timeout: float = 120.0) -> None:
        """Start a stopped or killed member and wait until it streams as a replica."""
        member = self.members[name]
        member.start()
        wait_until(
            lambda: name in self.replicas_streaming(), timeout=timeout, interval=0.2,
            what=f"{name} to stream as a replica", log=member.log,
        )

    def pause_replay(self, name: str) -> None:
        """Pause WAL replay on replica ``name`` (its lag grows while writes go on)."""
        self.members[name].psql("SELECT pg_wal_replay_pause();")

    def resume_replay(self, name: str) -> None:
        """Resume WAL replay on replica ``name``."""
        self.members[name].psql("SELECT pg_wal_replay_resume();")

    def wait_all_streaming(self, timeout: float = 120.0) -> None:
        """Wait (bounded) until the cluster is whole again."""
        self.wait_healthy(timeout=timeout)

    def settle(self, seconds: float = 0.0) -> None:
        """Sleep ``seconds`` (named for what the tests mean by it)."""
        time.sleep(seconds)
