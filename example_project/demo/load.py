"""A steady stream of reads and writes against the shop, recording every outcome.

Readers fetch the latest orders without cookies (replica traffic). Writers create an order
with a fresh key, keep the pinning cookie the response sets, and read their own order back:
a 404 there is a read-your-writes violation ("own write not visible").
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from demo.server import HOST
from resilient_db_testbed.load import Crew

READ, WRITE, OWN_READ = "read", "write", "own read"

# Outcomes of a write as the client saw it.
ACK, FAILED, UNKNOWN, DUPLICATE = "acknowledged", "failed", "unknown", "duplicate"


@dataclass(frozen=True)
class Sample:
    """One request: when it finished, in which phase, how it went and who served it."""

    t: float
    phase: int
    kind: str
    ok: bool
    status: int  # 0: no HTTP answer (refused, reset, timed out)
    latency: float
    target: str
    error: str = ""

    @property
    def stale(self) -> bool:
        """Tell whether this was a wrong answer: the user's own new order not found."""
        return self.kind == OWN_READ and self.status == 404

    @property
    def failed(self) -> bool:
        """Tell whether this request got an error, a refusal or a timeout."""
        return not self.ok and not self.stale


@dataclass
class WriteRecord:
    """What the client knows about one order it tried to create."""

    key: str
    phase: int
    outcome: str
    detail: str = ""
    acks: int = 0


@dataclass
class LoadStats:
    """Everything the load generator recorded (appended to under ``lock``)."""

    samples: list[Sample] = field(default_factory=list)
    writes: dict[str, WriteRecord] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Load:
    """Reader and writer threads, bounded by :meth:`stop` and a hard deadline."""

    def __init__(
        self,
        port: int,
        run_id: str,
        label: Callable[[dict[str, Any]], str],
        *,
        readers: int = 4,
        writers: int = 2,
        maria_writers: int = 0,
        pause: float = 0.04,
        timeout: float = 5.0,
        max_seconds: float = 900.0,
    ) -> None:
        self.port = port
        self.run_id = run_id
        self.label = label
        self.readers = readers
        self.writers = writers
        self.maria_writers = maria_writers
        self.pause = pause
        self.timeout = timeout
        self.phase = 0
        self.stats = LoadStats()
        self.started = time.monotonic()
        # The paced loop, its stop and its hard deadline are the test bed's (shared with
        # the chaos soak); what a loop does is this module's: HTTP with cookies.
        self.crew = Crew(pause=pause, deadline=self.started + max_seconds)

    def start(self) -> None:
        """Start the reader and writer threads."""
        self.started = time.monotonic()
        for i in range(self.readers):
            self.crew.spawn(f"reader-{i}", self._reader)
        for i in range(self.writers):
            self.crew.spawn(f"writer-{i}", self._writer, i)
        # Orders on the MariaDB alias: the same write and read-back, other servers.
        for i in range(self.maria_writers):
            self.crew.spawn(f"maria-writer-{i}", self._writer, f"m{i}", "/api/maria/orders/")

    def stop(self) -> None:
        """Stop every thread and wait for it (each finishes its request: bounded by timeout)."""
        self.crew.stop(timeout=self.timeout + 5)

    def running(self) -> bool:
        """Tell whether the threads should go on."""
        return self.crew.running()

    def now(self) -> float:
        """Return seconds since the load started."""
        return time.monotonic() - self.started

    # -- HTTP -----------------------------------------------------------------------------

    def _request(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        cookies: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], list[str]]:
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"error": f"HTTP {response.status} (not JSON)"}
        if not isinstance(data, dict):
            data = {}
        return response.status, data, response.headers.get_all("Set-Cookie") or []

    def _record(self, sample: Sample) -> None:
        with self.stats.lock:
            self.stats.samples.append(sample)

    def _call(
        self,
        conn: http.client.HTTPConnection,
        kind: str,
        method: str,
        path: str,
        ok_status: int,
        body: dict[str, Any] | None = None,
        cookies: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], list[str], http.client.HTTPConnection]:
        phase = self.phase
        begun = time.monotonic()
        try:
            status, data, set_cookies = self._request(conn, method, path, body, cookies)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self._record(
                Sample(self.now(), phase, kind, False, 0, time.monotonic() - begun, "",
                       type(exc).__name__)
            )
            return 0, {}, [], http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
        ok = status == ok_status
        served = data.get("served_by")
        target = self.label(served) if isinstance(served, dict) else ""
        error = "" if ok else str(data.get("error", f"HTTP {status}"))[:80]
        if kind == OWN_READ and status == 404:
            error = "own write not visible"
        self._record(
            Sample(self.now(), phase, kind, ok, status, time.monotonic() - begun, target, error)
        )
        return status, data, set_cookies, conn

    def _sleep(self) -> None:
        self.crew.pause()

    def _reader(self) -> None:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
        try:
            while self.running():
                _, _, _, conn = self._call(conn, READ, "GET", "/api/orders/", 200)
                self._sleep()
        finally:
            conn.close()

    def _writer(self, index: int | str, api: str = "/api/orders/") -> None:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
        cookies: dict[str, str] = {}
        n = 0
        try:
            while self.running():
                n += 1
                key = f"{self.run_id}-{index}-{n}"
                record = WriteRecord(key, self.phase, UNKNOWN)
                with self.stats.lock:
                    self.stats.writes[key] = record
                body = {"key": key, "customer": f"load-{index}", "item": "widget", "quantity": 1}
                status, data, set_cookies, conn = self._call(
                    conn, WRITE, "POST", api, 201, body, cookies
                )
                for header in set_cookies:
                    name, _, rest = header.partition("=")
                    cookies[name.strip()] = rest.split(";", 1)[0]
                record.outcome, record.detail = _write_outcome(status, data)
                if status == 201:
                    record.acks += 1
                    self._sleep()
                    _, _, _, conn = self._call(
                        conn, OWN_READ, "GET", f"{api}{key}/", 200, cookies=cookies
                    )
                self._sleep()
        finally:
            with contextlib.suppress(OSError):
                conn.close()


def _write_outcome(status: int, data: dict[str, Any]) -> tuple[str, str]:
    if status == 201:
        return ACK, ""
    if status == 409:
        return DUPLICATE, "the unique key refused a second insert"
    if status == 0:
        return UNKNOWN, "no HTTP answer"
    if data.get("outcome_unknown"):
        return UNKNOWN, str(data.get("error", ""))
    return FAILED, str(data.get("error", f"HTTP {status}"))
