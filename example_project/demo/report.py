"""Per-phase numbers: requests, failures, latency, targets, and the write check."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from demo.load import ACK, DUPLICATE, Sample, WriteRecord
from resilient_db_testbed.ledger import Tally, settle


def percentile(values: Sequence[float], q: float) -> float:
    """Return the ``q`` quantile (0..1) of ``values`` by nearest rank (0.0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass
class PhaseStats:
    """Traffic of one phase."""

    requests: int = 0  # served + failed + stale
    served: int = 0  # a right answer
    failed: int = 0  # an error, a refused connection or a timeout
    stale: int = 0  # a wrong answer: the user's own order, just acknowledged, not found
    latencies: list[float] = field(default_factory=list)
    targets: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, sample: Sample) -> None:
        """Count one request."""
        self.requests += 1
        self.latencies.append(sample.latency)
        if sample.ok:
            self.served += 1
            if sample.target:
                self.targets[sample.target] += 1
        elif sample.stale:
            self.stale += 1
        else:
            self.failed += 1
            self.errors[sample.error or f"HTTP {sample.status}"] += 1

    @property
    def worst(self) -> float:
        """Return the slowest request's latency."""
        return max(self.latencies, default=0.0)

    def p(self, q: float) -> float:
        """Return a latency percentile."""
        return percentile(self.latencies, q)


def phase_stats(samples: Iterable[Sample], phases: int) -> list[PhaseStats]:
    """Group ``samples`` by phase."""
    stats = [PhaseStats() for _ in range(phases)]
    for sample in samples:
        stats[sample.phase].add(sample)
    return stats


# The write check of one phase (its rules are shared with the chaos soak).
WriteTally = Tally


def check_writes(
    writes: Iterable[WriteRecord], rows: dict[str, int], phases: int
) -> list[WriteTally]:
    """Compare every write the client sent with ``rows`` (key -> number of rows)."""
    tallies = [WriteTally() for _ in range(phases)]
    for record in writes:
        # A second insert the unique key refused, or two acknowledgements, is a double
        # the database cannot show (the key holds one row at most).
        tallies[record.phase].add(
            settle(record.outcome == ACK, rows.get(record.key, 0)),
            doubled_by_client=record.outcome == DUPLICATE or record.acks > 1,
        )
    return tallies


def ms(seconds: float) -> str:
    """Format a latency."""
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Return a plain-text table (first column left-aligned, the others right-aligned)."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        out = [str(cells[0]).ljust(widths[0])]
        out += [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(out).rstrip()

    return [line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


SUMMARY_HEADERS = (
    "fault", "requests", "served", "failed", "p99", "worst", "writes ok", "lost", "doubled",
    "stale reads",
)


def summary_rows(
    names: Sequence[str], stats: Sequence[PhaseStats], tallies: Sequence[WriteTally]
) -> list[list[str]]:
    """Return one summary row per phase plus a total row."""
    rows = []
    for name, s, w in zip(names, stats, tallies, strict=True):
        rows.append([
            name, str(s.requests), str(s.served), str(s.failed), ms(s.p(0.99)), ms(s.worst),
            f"{w.acknowledged}/{w.sent}", str(w.lost), str(w.doubled), str(s.stale),
        ])
    everything = PhaseStats()
    for s in stats:
        everything.requests += s.requests
        everything.served += s.served
        everything.failed += s.failed
        everything.stale += s.stale
        everything.latencies += s.latencies
    acked = sum(w.acknowledged for w in tallies)
    sent = sum(w.sent for w in tallies)
    rows.append([
        "total", str(everything.requests), str(everything.served), str(everything.failed),
        ms(everything.p(0.99)), ms(everything.worst), f"{acked}/{sent}",
        str(sum(w.lost for w in tallies)), str(sum(w.doubled for w in tallies)),
        str(everything.stale),
    ])
    return rows


def comparison_rows(
    names: Sequence[str],
    stock: tuple[Sequence[PhaseStats], Sequence[WriteTally]],
    resilient: tuple[Sequence[PhaseStats], Sequence[WriteTally]],
) -> list[list[str]]:
    """Return one row per phase: stock Django and django-resilient-db side by side."""
    rows = []
    for i, name in enumerate(names):
        cells = [name]
        for stats, tallies in (stock, resilient):
            s, w = stats[i], tallies[i]
            share = 100.0 * s.served / s.requests if s.requests else 0.0
            cells += [
                f"{s.served}/{s.requests} ({share:.0f}%)",
                ms(s.worst),
                f"{w.lost}/{w.doubled}/{s.stale}",
            ]
        rows.append(cells)
    return rows


COMPARISON_HEADERS = (
    "fault",
    "stock: served", "worst", "lost/doubled/stale",
    "resilient: served", "worst", "lost/doubled/stale",
)
