"""The live view: redrawn in place on a terminal, one plain line every few seconds when piped."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from demo.load import Load, Sample
from demo.observer import HealthWatcher
from demo.report import ms, percentile


@dataclass
class Progress:
    """Where the run is: which phase, since when, and how long everything lasts."""

    index: int = 0
    name: str = "starting"
    what: str = ""
    phases: int = 1
    total: float = 1.0


def _window(samples: Sequence[Sample], since: float) -> list[Sample]:
    out = []
    for sample in reversed(samples):  # appended in finishing order: newest last
        if sample.t < since:
            break
        out.append(sample)
    return out


def _share(counter: Counter[str]) -> str:
    total = sum(counter.values())
    if not total:
        return "-"
    return "  ".join(f"{name} {100 * n / total:.0f}%" for name, n in counter.most_common(4))


class Dashboard:
    """Draws the demo's state from the load generator and the dbhealth watcher."""

    def __init__(
        self,
        title: str,
        load: Load,
        watcher: HealthWatcher,
        progress: Progress,
        *,
        out: TextIO = sys.stdout,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.title = title
        self.load = load
        self.watcher = watcher
        self.progress = progress
        self.out = out
        self.live = out.isatty() if live is None else live
        self.clock = clock
        self.events: list[str] = []
        self._drawn = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start redrawing."""
        self._thread = threading.Thread(target=self._loop, name="dashboard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Draw a last time and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.draw()

    def event(self, text: str) -> None:
        """Record something that happened (a fault injected or healed)."""
        line = f"{self.load.now():6.1f}s  {text}"
        with self._lock:
            self.events.append(line)
            if not self.live:
                self.out.write(f"  >> {line}\n")
                self.out.flush()

    def _loop(self) -> None:
        period = 0.5 if self.live else 3.0
        while not self._stop.wait(period):
            self.draw()

    def draw(self) -> None:
        """Draw one frame (terminal) or one line (piped)."""
        with self._lock:
            if self.live:
                self._frame()
            else:
                self.out.write(self.line() + "\n")
            self.out.flush()

    def _stats(self) -> tuple[float, float, float, list[Sample]]:
        now = self.load.now()
        with self.load.stats.lock:
            samples = list(self.load.stats.samples)
        recent = _window(samples, now - 2.0)
        rate = len(recent) / 2.0
        failures = sum(1 for s in recent if s.failed) / 2.0
        stale = sum(1 for s in recent if s.stale) / 2.0
        phase = [s for s in samples if s.phase == self.progress.index]
        return rate, failures, stale, phase

    def _health(self) -> str:
        status, targets = self.watcher.snapshot()
        parts = []
        for t in sorted(targets, key=lambda t: t.name):
            lag = f" lag {t.lag:.1f}s" if t.lag is not None and t.lag >= 0.5 else ""
            parts.append(f"{t.name} {t.state}{lag}")
        return f"{status}: " + ", ".join(parts) if parts else status

    def line(self) -> str:
        """Return the one-line form of the current state."""
        rate, failures, stale, phase = self._stats()
        lat = [s.latency for s in phase]
        served: Counter[str] = Counter(s.target for s in phase if s.ok and s.target)
        return (
            f"[{self.load.now():5.0f}s] {self.progress.name:<15} last 2 s: {rate:4.0f} req/s "
            f"{failures:3.0f} fail/s {stale:3.0f} stale/s | phase so far: "
            f"p50 {ms(percentile(lat, 0.5))} p99 {ms(percentile(lat, 0.99))} "
            f"served: {_share(served)} | dbhealth {self._health()}"
        )

    def _frame(self) -> None:
        width = max(60, shutil.get_terminal_size((100, 20)).columns)
        rate, failures, stale_rate, phase = self._stats()
        lat = [s.latency for s in phase]
        served: Counter[str] = Counter(s.target for s in phase if s.ok and s.target)
        failed = [s for s in phase if s.failed]
        stale = sum(1 for s in phase if s.stale)
        errors: Counter[str] = Counter(s.error or f"HTTP {s.status}" for s in failed)
        elapsed = self.load.now()
        bar_width = max(10, min(40, width - 40))
        done = min(1.0, elapsed / self.progress.total)
        bar = "#" * int(done * bar_width) + "." * (bar_width - int(done * bar_width))
        lines = [
            f"{self.title}",
            f"[{bar}] {elapsed:4.0f}/{self.progress.total:.0f} s   phase "
            f"{self.progress.index + 1}/{self.progress.phases}: {self.progress.name}",
            f"  fault:       {self.progress.what}",
            f"  last 2 s:    {rate:5.0f} req/s   {failures:4.0f} failures/s   "
            f"{stale_rate:3.0f} stale reads/s",
            f"  phase so far: {len(phase)} requests, {len(failed)} failed, {stale} stale   p50 "
            f"{ms(percentile(lat, 0.5))}  p95 {ms(percentile(lat, 0.95))}  "
            f"p99 {ms(percentile(lat, 0.99))}  max {ms(max(lat, default=0.0))}",
            f"  errors:      {', '.join(f'{e} x{n}' for e, n in errors.most_common(3)) or '-'}",
            f"  served by:   {_share(served)} (phase so far)",
            f"  dbhealth:    {self._health()}",
            "  events:",
            *(f"    {e}" for e in self.events[-7:]),
        ]
        lines = [line[: width - 1] for line in lines]
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")  # back to the frame's top, clear below
        self.out.write("\n".join(lines) + "\n")
        self._drawn = len(lines)
