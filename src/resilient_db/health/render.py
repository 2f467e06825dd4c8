"""Render a health :class:`~resilient_db.health.report.Report` as an aligned text table.

Widths are measured on plain text and colour is applied to padded cells, so
alignment holds with or without ANSI codes. When a width is given (a
terminal), the target column is shortened from the middle (host and port stay
readable) and error lines are cut to fit; piped output keeps everything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from resilient_db.health.report import AliasReport, Report, TargetRow

Paint = Callable[[str], str]

HEADERS = ("ALIAS / TARGET", "ROLE", "STATE", "LATENCY", "LAG", "REGISTRY", "RETRY", "SINCE")
RIGHT = frozenset({3, 4, 6, 7})  # numeric columns are right-aligned
MIN_NAME = 12


@dataclass(frozen=True)
class Palette:
    """Colour functions; the identity everywhere means no colour."""

    good: Paint = str
    warn: Paint = str
    bad: Paint = str
    head: Paint = str
    dim: Paint = str

    def state(self, word: str) -> Paint:
        """Return the colour for a state word."""
        if word in ("ok", "up", "healthy"):
            return self.good
        if word in ("down", "unavailable"):
            return self.bad
        if word in ("degraded", "lagging", "read-only", "probing"):
            return self.warn
        return str


def duration(seconds: float | None) -> str:
    """Format a duration compactly: ``850ms``, ``12s``, ``3m12s``, ``2h03m``, ``3d04h``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _latency(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds:.2f}s"


def _lag(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def _target_state(row: TargetRow) -> str:
    if not row.probe.ok:
        return "down"
    if not row.usable:
        return "read-only"
    if row.lagging:
        return "lagging"
    return "up"


def _alias_cells(verdict: AliasReport) -> list[str]:
    role = {"primary": "primary", "replica": "replica", "standalone": "-"}[verdict.kind]
    lag = _lag(verdict.lag) if verdict.kind == "replica" else ""
    return [verdict.alias, role, verdict.state, "", lag, "", "", ""]


def _target_cells(row: TargetRow, now_wall: float, now_mono: float) -> list[str]:
    record = row.health
    state = str(getattr(record.state, "value", record.state))
    registry = f"{state}x{record.failures}" if record.failures else state
    retry = ""
    if record.next_probe_at is not None and state != "up":
        retry = duration(max(0.0, record.next_probe_at - now_mono))
    since = duration(max(0.0, now_wall - record.since)) if record.since else "-"
    name = ("  peer " if row.is_peer else "  ") + row.target.label
    return [
        name,
        row.probe.role or "-",
        _target_state(row),
        _latency(row.probe.latency),
        # A primary has no replication lag (its probe says 0): "-", not "0.0s".
        _lag(row.probe.lag) if row.probe.role == "replica" else "-",
        registry,
        retry,
        since,
    ]


def _shorten(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    if width <= 3:
        return text[:width]
    # Keep the indent and the end (port/name) readable: cut from the middle.
    head = (width - 1) // 2
    tail = width - 1 - head
    return text[:head] + "~" + text[len(text) - tail :]


def render_table(
    report: Report, *, width: int | None = None, palette: Palette | None = None
) -> list[str]:
    """Return the table lines (no trailing newlines)."""
    paint = palette or Palette()
    now_wall, now_mono = time.time(), time.monotonic()
    rows: list[tuple[list[str], TargetRow | AliasReport]] = []
    by_alias: dict[str, list[TargetRow]] = {}
    for row in report.targets:
        by_alias.setdefault(row.target.alias, []).append(row)
    for verdict in report.aliases:
        rows.append((_alias_cells(verdict), verdict))
        for row in by_alias.get(verdict.alias, ()):
            rows.append((_target_cells(row, now_wall, now_mono), row))

    widths = [
        max([len(header)] + [len(cells[i]) for cells, _ in rows])
        for i, header in enumerate(HEADERS)
    ]
    gap = 2
    if width is not None:
        total = sum(widths) + gap * (len(widths) - 1)
        if total > width:
            gap = 1
            total -= len(widths) - 1
        if total > width:
            widths[0] = max(MIN_NAME, widths[0] - (total - width))

    def line(cells: Sequence[str], colour: Sequence[Paint] | None = None) -> str:
        out = []
        for i, cell in enumerate(cells):
            text = _shorten(cell, widths[i])
            padded = text.rjust(widths[i]) if i in RIGHT else text.ljust(widths[i])
            if colour is not None and text:
                padded = colour[i](padded)
            out.append(padded)
        return (" " * gap).join(out).rstrip()

    lines = [paint.head(line(HEADERS))]
    plain: Paint = str
    for cells, item in rows:
        colour = [plain] * len(cells)
        colour[2] = paint.state(cells[2])
        if isinstance(item, TargetRow):
            colour[5] = paint.state(cells[5].split("x")[0])
            lines.append(line(cells, colour))
            detail = ""
            if not item.probe.ok:
                category = item.probe.category.value if item.probe.category else "error"
                detail = f"      {category}: {item.error or ''}".rstrip(": ")
            elif item.note:
                detail = f"      note: {item.note}"
            if detail:
                if width is not None:
                    detail = detail[:width]
                lines.append(paint.dim(detail))
        else:
            colour[0] = paint.head
            lines.append(line(cells, colour))
    return lines


def render_summary(report: Report, *, palette: Palette | None = None) -> list[str]:
    """Return the closing lines: overall status, exit code and why."""
    paint = palette or Palette()
    word = paint.state(report.status)(report.status)
    out = [
        f"status: {word} (exit {report.exit_code}), "
        f"{len(report.targets)} targets probed in {report.duration:.2f}s"
    ]
    for verdict in report.aliases:
        for reason in verdict.reasons:
            out.append(f"  {verdict.alias}: {reason}")
    return out
