"""The web dashboard's data: one JSON document the page polls, rewritten every second.

The page itself is a view of the example project (``livedemo``); it reads this
file, named by ``SHOP_DEMO_STATE``, and never touches a database, so it keeps
answering whatever the demo breaks. A separate app server serves it for the
whole demo (both runs of ``--compare``, and the final summary afterwards).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demo.load import Sample
from demo.report import percentile


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


def timeline(samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """Return one point per whole second: requests, failures, stale reads and p99 of that second."""
    buckets: dict[int, list[Sample]] = {}
    for sample in samples:
        buckets.setdefault(math.floor(sample.t), []).append(sample)
    points = []
    for second in sorted(buckets):
        chunk = buckets[second]
        points.append({
            "t": second,
            "phase": Counter(s.phase for s in chunk).most_common(1)[0][0],
            "requests": len(chunk),
            "failed": sum(1 for s in chunk if s.failed),
            "stale": sum(1 for s in chunk if s.stale),
            "p99_ms": _ms(percentile([s.latency for s in chunk], 0.99)),
        })
    return points


def phase_rows(
    samples: Sequence[Sample], names: Sequence[str], whats: Sequence[str],
    starts: Sequence[float], now: float,
) -> list[dict[str, Any]]:
    """Return per-phase figures, each over its own window (from its start to the next start)."""
    rows = []
    for index, name in enumerate(names):
        mine = [s for s in samples if s.phase == index]
        latencies = [s.latency for s in mine]
        start = starts[index] if index < len(starts) else None
        end = starts[index + 1] if index + 1 < len(starts) else (now if start is not None else None)
        rows.append({
            "name": name,
            "what": whats[index],
            "start": None if start is None else round(start, 3),
            "end": None if end is None else round(end, 3),
            "requests": len(mine),
            "served": sum(1 for s in mine if s.ok),
            "failed": sum(1 for s in mine if s.failed),
            "stale": sum(1 for s in mine if s.stale),
            "p99_ms": _ms(percentile(latencies, 0.99)),
            "worst_ms": _ms(max(latencies, default=0.0)),
            "served_by": dict(Counter(s.target for s in mine if s.ok and s.target).most_common()),
        })
    return rows


def registry_view(report: dict[str, Any] | None, name_of: Callable[[str, str], str]) -> list[dict[str, Any]]:
    """Return each target as the site's own registry sees it, from its health endpoint's JSON."""
    if not report:
        return []
    out = []
    for t in report.get("targets", []):
        host, port = t.get("host"), t.get("port")
        name = name_of(str(host), str(port)) if host and port else str(t.get("id", "?"))
        registry = t.get("registry") or {}
        out.append({
            "name": name,
            "alias": t.get("alias"),
            "state": registry.get("state"),
            "failures": registry.get("failures"),
            "last_category": registry.get("last_category"),
            "usable": t.get("usable"),
        })
    return sorted(out, key=lambda t: (str(t["alias"]), t["name"]))


@dataclass
class RunState:
    """What the page shows about one run while it goes on."""

    mode: str
    title: str
    names: list[str]
    whats: list[str]
    total: float
    starts: list[float] = field(default_factory=list)
    index: int = 0
    ended: float | None = None  # seconds of traffic, once the run is over


class WebFeed:
    """Rewrites the JSON document every second from the load, the watcher and the site's registry."""

    def __init__(self, path: Path, name_of: Callable[[str, str], str]) -> None:
        self.path = path
        self.name_of = name_of
        self.finished: list[dict[str, Any]] = []
        self.comparison: dict[str, Any] | None = None
        self.done = False
        self.run: RunState | None = None
        self.load: Any = None
        self.watcher: Any = None
        self.events: Callable[[], list[str]] = list
        self.site_port: int | None = None
        self._registry: list[dict[str, Any]] = []
        self._registry_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Write the first document and keep rewriting it."""
        self.write()
        self._thread = threading.Thread(target=self._loop, name="web-feed", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(Exception):  # the page shows the last good document
                self.write()

    def stop(self) -> None:
        """Write a last time and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.write()

    def follow(self, run: RunState, load: Any, watcher: Any, events: Callable[[], list[str]],
               site_port: int | None) -> None:
        """Show a run that is starting."""
        with self._lock:
            self.run, self.load, self.watcher, self.events = run, load, watcher, events
            self.site_port = site_port
            self._registry = []

    def finish(self, summary: dict[str, Any]) -> None:
        """Keep a finished run's summary (table and write ledger) on the page."""
        with self._lock:
            self.finished.append(summary)
            self.site_port = None

    def _site_registry(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        if self.site_port is None or now - self._registry_at < 2.0:
            return self._registry
        self._registry_at = now
        conn = http.client.HTTPConnection("127.0.0.1", self.site_port, timeout=2)
        try:
            conn.request("GET", "/health/")
            self._registry = registry_view(json.loads(conn.getresponse().read()), self.name_of)
        except (OSError, ValueError):
            pass  # the last view stays; the site may be busy breaking
        finally:
            conn.close()
        return self._registry

    def document(self) -> dict[str, Any]:
        """Return the JSON document as of now."""
        with self._lock:
            run, load, watcher = self.run, self.load, self.watcher
            doc: dict[str, Any] = {
                "updated": time.time(),
                "done": self.done,
                "finished": list(self.finished),
                "comparison": self.comparison,
                "run": None,
            }
        if run is None or load is None:
            return doc
        now = load.now() if run.ended is None else run.ended
        with load.stats.lock:
            samples = list(load.stats.samples)
        # The second under way (or the last one, cut short by the end of the
        # run) is not a whole second: its rate would be a dip that never was.
        complete = [s for s in samples if s.t < math.floor(now)]
        status, targets = watcher.snapshot() if watcher is not None else ("?", [])
        doc["run"] = {
            "mode": run.mode,
            "title": run.title,
            "elapsed": round(now, 1),
            "total": run.total,
            "phase": run.index,
            "timeline": timeline(complete),
            "phases": phase_rows(samples, run.names, run.whats, run.starts, now),
            "dbhealth": {
                "status": status,
                "targets": [
                    {"name": t.name, "state": t.state, "lag": t.lag}
                    for t in sorted(targets, key=lambda t: t.name)
                ],
            },
            "registry": self._site_registry(),
            "events": self.events()[-12:],
        }
        return doc

    def write(self) -> None:
        """Write the document atomically (the page never reads half a file)."""
        text = json.dumps(self.document(), separators=(",", ":"))
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)
