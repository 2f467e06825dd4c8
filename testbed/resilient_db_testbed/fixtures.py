"""Pytest plugin: the real-server test bed and fault fixtures that always undo themselves.

Load it with ``pytest_plugins = ["resilient_db_testbed.fixtures"]``. Tests marked ``bed``,
``postgres``, ``mariadb`` or ``redis`` get the ``bed`` fixture automatically.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator

import pytest

from resilient_db_testbed import bed as bed_module
from resilient_db_testbed.bed_config import BedConfig, BedError
from resilient_db_testbed.bed_install import missing_packages
from resilient_db_testbed.faults import Freezer, PeerKiller, ServerControl, heal_all
from resilient_db_testbed.faults_lag import ReplicaLag
from resilient_db_testbed.faults_maria import MariaKiller
from resilient_db_testbed.faults_pg import BouncerAdmin, PgTerminator
from resilient_db_testbed.proxy import ChaosProxy

__all__ = [
    "bed",
    "chaos_proxy",
    "freeze_peer",
    "kill_peer",
    "maria_kill",
    "pg_terminate",
    "pgbouncer_admin",
    "redis_url",
    "replica_lag",
    "server_control",
]

_BED_MARKERS = ("bed", "postgres", "mariadb", "redis")
_TRUTHY = {"1", "true", "yes", "on"}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUTHY


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every test marked for the bed the ``bed`` fixture (first, so it starts early)."""
    for item in items:
        if any(item.get_closest_marker(m) for m in _BED_MARKERS):
            names = getattr(item, "fixturenames", None)
            if isinstance(names, list) and "bed" not in names:
                names.insert(0, "bed")


@pytest.fixture(scope="session")
def bed() -> Iterator[BedConfig]:
    """Make sure the test bed runs; stop it at the end only if this session started it."""
    missing = missing_packages()
    if missing:
        reason = "test bed programs missing: " + ", ".join(missing) + (
            " (python -m resilient_db_testbed.bed install)"
        )
        if _env_flag("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    cold = not any(s.running for s in bed_module.status())
    if not bed_module.is_up():
        try:
            bed_module.up()
        except BedError as exc:
            pytest.fail(f"the test bed did not come up:\n{exc}")
    # Faults left by a crashed earlier run (a frozen peer, a paused bouncer) would make
    # this run fail in confusing ways; undo them before the first test.
    heal_all()
    try:
        yield bed_module.config()
    finally:
        if cold and not _env_flag("RESILIENT_DB_BED_KEEP"):
            bed_module.down()


@pytest.fixture
def pg_terminate(bed: BedConfig) -> PgTerminator:
    """Terminate PostgreSQL sessions (by pid, database, user or application_name)."""
    return PgTerminator(bed)


@pytest.fixture
def maria_kill(bed: BedConfig) -> MariaKiller:
    """KILL MariaDB connections (by id, user or database)."""
    return MariaKiller(bed)


@pytest.fixture
def server_control(bed: BedConfig) -> Iterator[ServerControl]:
    """Stop/start/restart bed servers; everything touched runs (and streams) again afterwards."""
    control = ServerControl()
    try:
        yield control
    finally:
        control.restore()


@pytest.fixture
def kill_peer(bed: BedConfig) -> Iterator[PeerKiller]:
    """SIGKILL a PgBouncer or MariaDB peer; killed peers are restarted afterwards."""
    killer = PeerKiller()
    try:
        yield killer
    finally:
        killer.restore()


@pytest.fixture
def freeze_peer(bed: BedConfig) -> Iterator[Freezer]:
    """SIGSTOP a server process (a black hole); SIGCONT is guaranteed afterwards."""
    freezer = Freezer()
    try:
        yield freezer
    finally:
        freezer.thaw()


@pytest.fixture
def pgbouncer_admin(bed: BedConfig) -> Iterator[Callable[[str], BouncerAdmin]]:
    """Return ``get("a" | "b")`` giving a PgBouncer console; paused bouncers resume afterwards."""
    consoles: dict[str, BouncerAdmin] = {}

    def get(name: str) -> BouncerAdmin:
        console = BouncerAdmin(name, bed)
        return consoles.setdefault(console.name, console)

    try:
        yield get
    finally:
        for console in consoles.values():
            if console.paused:
                console.resume()


@pytest.fixture
def replica_lag(bed: BedConfig) -> Iterator[ReplicaLag]:
    """Pause/resume replication on the replicas and read the lag; resumed afterwards."""
    lag = ReplicaLag(bed)
    try:
        yield lag
    finally:
        lag.restore()


@pytest.fixture
def chaos_proxy() -> Iterator[Callable[..., ChaosProxy]]:
    """Return ``make(target)`` starting a :class:`ChaosProxy` to a port or bed server name."""
    proxies: list[ChaosProxy] = []

    def make(target: int | str, host: str = "127.0.0.1") -> ChaosProxy:
        port = bed_module.config().port(target) if isinstance(target, str) else target
        proxy = ChaosProxy(host, port).start()
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            proxy.stop()


def _redis_db_number() -> int:
    # Database 1 is the test settings' cache; each xdist worker gets a database of its own.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return 2 + (int(worker) if worker.isdigit() else 0) % 14


@pytest.fixture
def redis_url(bed: BedConfig) -> Iterator[str]:
    """Return ``redis://127.0.0.1:26379/N`` for a database emptied after the test."""
    number = _redis_db_number()
    try:
        yield f"redis://{bed.host}:{bed.redis_port}/{number}"
    finally:
        with contextlib.suppress(OSError):
            _flush(bed, number)


def _flush(cfg: BedConfig, number: int) -> None:
    # SELECT is per connection, so FLUSHDB must travel on the same one: send both at once.
    _redis_pipeline(cfg.host, cfg.redis_port, [["SELECT", str(number)], ["FLUSHDB"]])


def _redis_pipeline(host: str, port: int, commands: list[list[str]], timeout: float = 3.0) -> None:
    """Send RESP commands on one connection and check that each answered +OK."""
    payload = b""
    for args in commands:
        payload += f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
        )
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(payload)
        reply = b""
        for _ in range(64):
            if reply.count(b"\r\n") >= len(commands):
                break
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    if reply.count(b"+OK") < len(commands):
        raise BedError(f"redis commands failed: {reply!r}")
