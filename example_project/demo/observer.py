"""Watch ``manage.py dbhealth --json --watch`` and keep the latest state of every target."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from demo.project import MANAGE, PROJECT_DIR


@dataclass(frozen=True)
class TargetState:
    """One target as dbhealth last saw it."""

    name: str
    usable: bool
    state: str  # "up", "down", "lagging", ...
    lag: float | None


class HealthWatcher:
    """A child ``dbhealth --watch`` whose JSON lines update :attr:`targets` and :attr:`status`."""

    def __init__(self, env: dict[str, str], name_of: Callable[[str, str], str],
                 interval: float = 1.0) -> None:
        self.env = env
        self.name_of = name_of
        self.interval = interval
        self.status = "starting"
        self.targets: dict[str, TargetState] = {}
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the child and the thread reading it."""
        self.proc = subprocess.Popen(
            [sys.executable, str(MANAGE), "dbhealth", "--json", "--watch", str(self.interval),
             "--timeout", "1"],
            cwd=PROJECT_DIR,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.thread = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self._update(json.loads(line))

    def _update(self, report: dict[str, Any]) -> None:
        targets = {}
        for t in report["targets"]:
            name = self.name_of(str(t.get("host") or ""), str(t.get("port") or ""))
            lag = t["probe"].get("lag")
            if not t["probe"].get("ok"):
                state = t["probe"].get("category") or "down"
            elif t.get("lagging"):
                state = "lagging"
            else:
                state = "up" if t.get("usable") else "unusable"
            targets[name] = TargetState(name, bool(t.get("usable")), state, lag)
        with self.lock:
            self.status = str(report.get("status", "?"))
            self.targets = targets

    def snapshot(self) -> tuple[str, list[TargetState]]:
        """Return the overall status and the targets, as last reported."""
        with self.lock:
            return self.status, list(self.targets.values())

    def stop(self) -> None:
        """Stop the child and the reader thread."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()
        if self.thread is not None:
            self.thread.join(timeout=5)
