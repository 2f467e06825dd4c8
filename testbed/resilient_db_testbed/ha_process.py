"""Process helpers the HA clusters need beyond the ordinary bed's plumbing."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from resilient_db_testbed.bed_process import RunAs, alive, run

__all__ = ["children", "kill_tree", "spawn_with_pidfile"]


def spawn_with_pidfile(
    cmd: list[str], *, owner: RunAs, log: Path, pidfile: Path, env: dict[str, str] | None = None
) -> None:
    """Start ``cmd`` detached as ``owner``, output appended to ``log``, its pid in ``pidfile``."""
    # etcd and Patroni write no pid file of their own; the backgrounding shell
    # records the pid of the exec'd program (the same process, not a wrapper).
    script = 'log="$1"; pid="$2"; shift 2; "$@" </dev/null >>"$log" 2>&1 & echo $! >"$pid"'
    run(
        ["/bin/sh", "-c", script, "sh", str(log), str(pidfile), *cmd],
        owner=owner,
        env=env,
        cwd=pidfile.parent,
        timeout=15.0,
    )


def children(pid: int) -> list[int]:
    """Return the pids whose parent is ``pid``."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry))
    return found


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to ``pid`` and every descendant (children first collected, then all killed)."""
    todo = [pid]
    everyone: list[int] = []
    while todo:
        current = todo.pop()
        everyone.append(current)
        todo.extend(children(current))
    # Freeze first so nothing forks or restarts between the kills.
    for target in everyone:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGSTOP)
    for target in everyone:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, sig)
            os.kill(target, signal.SIGCONT)


def gone(pids: list[int]) -> bool:
    """Tell whether none of ``pids`` is alive."""
    return not any(alive(p) for p in pids)
