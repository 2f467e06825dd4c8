"""Process plumbing for the test bed: users, daemons, pid files and bounded waits."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from resilient_db_testbed.bed_config import BedError

__all__ = [
    "RunAs",
    "alive",
    "command_line",
    "log_tail",
    "port_open",
    "prepare_dir",
    "read_pid",
    "run",
    "run_as",
    "spawn_daemon",
    "stop_pid",
    "wait_until",
    "which",
]


@dataclass(frozen=True)
class RunAs:
    """The operating-system account a server runs as (``None`` ids: the current user)."""

    uid: int | None = None
    gid: int | None = None
    name: str = ""

    @property
    def switches(self) -> bool:
        """Tell whether processes must change to this account before running."""
        return self.uid is not None and self.uid != os.geteuid()


def run_as(*candidates: str) -> RunAs:
    """Return the first existing account of ``candidates`` when root, else the current user."""
    if os.geteuid() != 0:
        return RunAs(name=pwd.getpwuid(os.geteuid()).pw_name)
    for name in candidates:
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return RunAs(uid=entry.pw_uid, gid=entry.pw_gid, name=name)
    raise BedError(f"none of the accounts {', '.join(candidates)} exists; create one of them")


def prepare_dir(path: Path, owner: RunAs, mode: int = 0o755) -> Path:
    """Create ``path`` (and parents) and hand it to ``owner``."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    if owner.switches:
        assert owner.uid is not None and owner.gid is not None
        os.chown(path, owner.uid, owner.gid)
    return path


def _child_env(owner: RunAs, extra: Mapping[str, str] | None) -> dict[str, str]:
    # Client libraries read PGHOST, MYSQL_HOST and friends; a stray value must not send the
    # bed's setup to a system server, so only a neutral environment goes to the children.
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
    }
    if owner.switches:
        env["HOME"] = "/"
        env["USER"] = env["LOGNAME"] = owner.name
    else:
        env["HOME"] = os.environ.get("HOME", "/")
    env.update(extra or {})
    return env


def run(
    cmd: Sequence[str],
    *,
    owner: RunAs | None = None,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    cwd: Path | None = None,
) -> str:
    """Run ``cmd`` to completion (bounded by ``timeout``) and return its standard output."""
    who = owner or RunAs()
    switch = who.switches
    try:
        done = subprocess.run(
            list(cmd),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_child_env(who, env),
            cwd=cwd or "/",
            user=who.uid if switch else None,
            group=who.gid if switch else None,
            extra_groups=[] if switch else None,
        )
    except subprocess.TimeoutExpired as exc:
        raise BedError(f"{cmd[0]} did not finish within {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise BedError(
            f"{' '.join(cmd[:3])} ... failed (exit {done.returncode}):\n"
            f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return done.stdout


def spawn_daemon(
    cmd: Sequence[str],
    *,
    owner: RunAs,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Start ``cmd`` detached in its own session, output appended to ``log``."""
    # The short-lived shell backgrounds the server and exits at once, so the server is
    # re-parented and no Popen object of ours outlives this call (a still-running Popen is
    # a ResourceWarning, and the bed must outlive the process that started it).
    script = 'log="$1"; shift; exec "$@" </dev/null >>"$log" 2>&1 &'
    run(
        ["/bin/sh", "-c", script, "sh", str(log), *cmd],
        owner=owner,
        env=env,
        cwd=cwd,
        timeout=15.0,
    )


def read_pid(pidfile: Path) -> int | None:
    """Return the live process id recorded in ``pidfile``, or ``None``."""
    try:
        first = pidfile.read_text().split("\n", 1)[0].strip()
        pid = int(first)
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def alive(pid: int) -> bool:
    """Tell whether ``pid`` runs (or is stopped) with at least one thread that is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # After SIGKILL the main thread of a multi-threaded server (PgBouncer, the proxy) can be a
    # zombie while other threads still exit and still hold its sockets open; only when every
    # thread is gone is the process really dead.
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    for task in tasks:
        try:
            stat = Path(f"/proc/{pid}/task/{task}/stat").read_text()
        except OSError:
            continue
        # The state letter follows the parenthesised command name, which may contain spaces.
        if stat.rsplit(")", 1)[-1].split()[0] not in {"Z", "X"}:
            return True
    return False


def stop_pid(pid: int, *, timeout: float = 30.0, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to ``pid`` (waking it if frozen) and wait until it is gone, else SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, sig)
    if wait_until(lambda: not alive(pid), timeout=timeout, interval=0.05, raise_on_timeout=False):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), timeout=10.0, what=f"process {pid} to die")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Tell whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
    log: Path | None = None,
    raise_on_timeout: bool = True,
) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass (then raise with ``log``'s tail)."""
    deadline = time.monotonic() + timeout
    attempts = max(1, int(timeout / max(interval, 0.001)) + 1)
    for _ in range(attempts * 2):
        if predicate():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    if predicate():
        return True
    if not raise_on_timeout:
        return False
    message = f"timed out after {timeout:.0f} s waiting for {what}"
    if log is not None:
        message += f"\n--- last lines of {log} ---\n{log_tail(log)}"
    raise BedError(message)


def log_tail(path: Path, lines: int = 30) -> str:
    """Return the last ``lines`` lines of ``path`` (or a note that it is missing)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def which(*names: str, extra_dirs: Sequence[Path] = ()) -> Path | None:
    """Return the first of ``names`` found on PATH, in ``extra_dirs`` or in the sbin dirs."""
    search = os.pathsep.join(
        [os.environ.get("PATH", ""), *map(str, extra_dirs), "/usr/sbin", "/usr/local/sbin", "/sbin"]
    )
    for name in names:
        found = shutil.which(name, path=search)
        if found:
            return Path(found)
    return None


def command_line(main: Callable[[], int]) -> NoReturn:
    """Run ``main`` as a ``python -m`` command of the bed and exit with its status.

    Files it creates are readable by the servers' accounts (umask 022); a
    ``BedError`` is printed as one ``error:`` line and exits 2; output piped into
    head(1) and the like is not an error of the bed.
    """
    os.umask(0o022)
    try:
        code = main()
    except BedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)
