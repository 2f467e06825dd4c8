"""Run the shop under a real app server on loopback, as a child process."""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from demo.project import PROJECT_DIR

HOST = "127.0.0.1"  # the demo only ever talks to loopback


def free_port() -> int:
    """Return a TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def default_kind() -> str:
    """Return the best installed server: gunicorn, then uvicorn, then the stdlib fallback."""
    for kind in ("gunicorn", "uvicorn"):
        if importlib.util.find_spec(kind) is not None:
            return kind
    return "wsgiref"


def command(kind: str, port: int) -> list[str]:
    """Return the command line starting the shop under ``kind`` on ``HOST:port``."""
    if kind == "gunicorn":
        # Threads, not processes, carry the concurrency: one process learns the health
        # picture once. Request threads stuck on a frozen peer leave others free.
        return [
            sys.executable, "-m", "gunicorn", "shop.wsgi:application",
            "--bind", f"{HOST}:{port}", "--workers", "1", "--threads", "24",
            "--worker-class", "gthread", "--timeout", "60", "--graceful-timeout", "5",
            "--log-level", "warning",
        ]
    if kind == "uvicorn":
        return [
            sys.executable, "-m", "uvicorn", "shop.asgi:application",
            "--host", HOST, "--port", str(port), "--log-level", "warning", "--no-access-log",
        ]
    return [sys.executable, "-m", "demo.wsgiserver", HOST, str(port)]


class AppServer:
    """The shop under gunicorn, uvicorn or the stdlib server; stopped by :meth:`stop`."""

    def __init__(self, kind: str, env: dict[str, str], log_path: Path,
                 *, web_port: int | None = None) -> None:
        self.kind = kind
        self.port = web_port or free_port()
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """Return ``host:port``."""
        return f"{HOST}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait (bounded) until the shop answers."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command(self.kind, self.port),
                cwd=PROJECT_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a whole
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} exited with {self.proc.returncode}; see {self.log_path}"
                )
            if self._answers():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.kind} did not answer within {timeout:.0f} s; see {self.log_path}")

    def _answers(self) -> bool:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
        try:
            conn.request("GET", "/api/orders/")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        """Stop the server's process group: SIGTERM, then SIGKILL after a grace period."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
