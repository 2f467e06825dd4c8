"""The soak's verdict: compare the write log with what the databases hold.

The lost / doubled / applied-despite-an-error rules are the test bed's write ledger
(``resilient_db_testbed.ledger``), shared with the live demo; the soak's own rules
(torn transactions, counters, phantom rows, excused reads) stay here.

Pure functions over plain data (the logs, the fault windows and a snapshot of the
tables), so the rules are unit-tested without a database (test_accounting.py).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence

from resilient_db_testbed.chaos import Window
from resilient_db_testbed.ledger import settle
from tests.chaos.workload import (
    COMMITTED,
    FAILED,
    INCR,
    PRIMARY_OF,
    SINGLE,
    UNDOCUMENTED,
    UNKNOWN,
    WorkerLog,
    Write,
)


@dataclasses.dataclass
class Snapshot:
    """What one primary holds for this run."""

    authors: Counter[str] = dataclasses.field(default_factory=Counter)  # name -> rows
    books: Counter[str] = dataclasses.field(default_factory=Counter)  # title -> rows
    counters: dict[str, int] = dataclasses.field(default_factory=dict)  # key -> value


@dataclasses.dataclass
class Report:
    """Counts for the summary and the list of broken rules (empty when all hold)."""

    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    by_alias: dict[str, Counter[str]] = dataclasses.field(default_factory=dict)
    errors: Counter[str] = dataclasses.field(default_factory=Counter)  # error type -> count
    violations: list[str] = dataclasses.field(default_factory=list)
    faults: list[str] = dataclasses.field(default_factory=list)

    def add(self, name: str, n: int = 1) -> None:
        """Increase the counter ``name``."""
        self.counts[name] = self.counts.get(name, 0) + n

    def violate(self, rule: str, detail: str, limit: int = 20) -> None:
        """Record a broken rule (the first ``limit`` of each kind in full)."""
        same = sum(1 for v in self.violations if v.startswith(rule + ":"))
        if same < limit:
            self.violations.append(f"{rule}: {detail}")
        self.add(f"violations.{rule}")

    def text(self) -> str:
        """Return the human-readable report."""
        lines = ["chaos soak report", "=================", ""]
        width = max((len(k) for k in self.counts), default=10)
        lines += [f"{k:<{width}}  {v}" for k, v in sorted(self.counts.items())]
        lines += ["", "per alias (outcome: count):"]
        for alias, c in sorted(self.by_alias.items()):
            lines.append(f"  {alias:<16} " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
        if self.errors:
            lines += ["", "errors raised (type: count):"]
            lines += [f"  {k}: {v}" for k, v in self.errors.most_common()]
        lines += ["", "faults (start +s, duration s, down aliases):"]
        lines += [f"  {f}" for f in self.faults]
        lines += ["", f"violations: {len(self.violations)}"]
        lines += [f"  {v}" for v in self.violations]
        return "\n".join(lines) + "\n"


def _error_type(text: str) -> str:
    return text.split(":", 1)[0]


def _excused(alias: str, started: float, ended: float, windows: Iterable[Window],
             grace: float) -> bool:
    """Tell whether [started, ended] overlaps a window in which ``alias`` was all down."""
    return any(
        alias in w.down and started <= w.ended + grace and ended >= w.started for w in windows
    )


def _stored(w: Write, snap: Snapshot) -> tuple[int, bool]:
    """Return (copies stored, consistent) for a SINGLE or TXN write."""
    authors = snap.authors.get(w.key, 0)
    if w.kind == SINGLE:
        return authors, True
    books = [snap.books.get(f"{w.key}/{i}", 0) for i in (1, 2)]
    consistent = all(b == authors for b in books)
    return authors, consistent


def judge(
    logs: Sequence[WorkerLog],
    windows: Sequence[Window],
    snapshots: dict[str, Snapshot],
    *,
    grace: float,
    run_started: float,
) -> Report:
    """Apply every rule of the soak and return the report."""
    r = Report()
    for w in windows:
        down = ",".join(w.down) or "-"
        r.faults.append(
            f"{w.fault:<24} +{w.started - run_started:6.1f}  {w.ended - w.started:5.1f}  {down}"
            + ("  HARNESS ERROR" if w.error else "")
        )
        if w.error:
            r.violate("fault_not_injected_or_undone", f"{w.fault}: {w.error.strip()[-300:]}")
    r.add("faults.injected", len(windows))
    known: dict[str, set[str]] = {p: set() for p in snapshots}
    incr: dict[str, Counter[str]] = {}
    for log in logs:
        if log.crashed:
            r.violate("worker_crashed", f"{log.name}: {log.crashed.strip()[-500:]}")
        if not log.finished:
            r.violate("worker_unfinished", log.name)
        for write in log.writes:
            _judge_write(r, write, snapshots, known, incr, log, windows, grace)
        for read in log.reads:
            r.add("reads.total")
            c = r.by_alias.setdefault(read.alias, Counter())
            if read.routed_to:
                # Which alias the router picked (a fallback to the primary shows here).
                c[f"routed_to_{read.routed_to}"] += 1
            if read.ok:
                r.add("reads.ok")
                c["read_ok"] += 1
                continue
            r.errors[_error_type(read.error)] += 1
            # A routed read is judged on the alias the router chose: the design sends
            # reads to the primary when no replica is usable (rule 9), and promises
            # no move of a read from a failing primary to a replica.
            if _excused(read.routed_to or read.alias, read.started, read.ended, windows, grace):
                r.add("reads.failed_while_all_down")
                c["read_failed_all_down"] += 1
            else:
                r.add("reads.failed_outside_down_windows")
                c["read_failed"] += 1
                r.violate("read_failed", f"{read.alias} +{read.started - run_started:.2f}s: {read.error}")
    _judge_counters(r, logs, snapshots, incr)
    # Rows of this run that no logged write accounts for: written by a retry nobody asked for.
    for primary, snap in snapshots.items():
        for name, n in snap.authors.items():
            if name not in known[primary]:
                r.violate("phantom_row", f"{primary}: {name!r} x{n} is in no write log")
    return r


def _judge_write(
    r: Report,
    write: Write,
    snapshots: dict[str, Snapshot],
    known: dict[str, set[str]],
    incr: dict[str, Counter[str]],
    log: WorkerLog,
    windows: Sequence[Window],
    grace: float,
) -> None:
    primary = PRIMARY_OF[write.alias]
    outcome = write.outcome or "never_finished"
    r.add("writes.total")
    r.add(f"writes.{outcome}")
    r.by_alias.setdefault(write.alias, Counter())[f"{write.kind}_{outcome}"] += 1
    if write.error:
        r.errors[_error_type(write.error)] += 1
    if outcome == "never_finished":
        r.violate("write_never_finished", f"{write.alias} {write.key}")
        return
    if outcome == UNDOCUMENTED:
        r.violate("undocumented_exception", f"{write.alias} {write.kind} {write.key}: {write.error}")
    if (
        outcome == FAILED
        and "AllTargetsDown" in write.error
        and not _excused(write.alias, write.started, write.ended, windows, grace)
    ):
        r.violate("write_refused_while_a_target_was_up", f"{write.alias} {write.key}: {write.error}")
    if write.kind == INCR:
        incr.setdefault(log.counters[primary], Counter())[outcome] += 1
        return
    known[primary].add(write.key)
    copies, consistent = _stored(write, snapshots[primary])
    settled = settle(outcome == COMMITTED, copies)
    if not consistent:
        r.violate("transaction_torn", f"{write.alias} {write.key}: rows of one atomic() differ")
    if settled.doubled:
        r.violate("written_twice", f"{write.alias} {write.kind} {write.key} x{copies} ({outcome})")
    if settled.acknowledged and not settled.exactly_once:
        r.violate("acknowledged_write_lost", f"{write.alias} {write.kind} {write.key}")
    elif outcome == FAILED and settled.applied_despite_error:
        r.violate("failed_write_committed", f"{write.alias} {write.key}: {write.error}")
    elif outcome == UNKNOWN:
        r.add("writes.unknown_committed" if settled.stored else "writes.unknown_not_committed")
    elif outcome == UNDOCUMENTED and settled.stored:
        r.add("writes.undocumented_committed")


def _judge_counters(
    r: Report,
    logs: Sequence[WorkerLog],
    snapshots: dict[str, Snapshot],
    incr: dict[str, Counter[str]],
) -> None:
    """Each counter: acknowledged <= value <= acknowledged + unknown (+ undocumented)."""
    for log in logs:
        for primary, key in log.counters.items():
            c = incr.get(key, Counter())
            value = snapshots[primary].counters.get(key)
            if value is None:
                r.violate("counter_missing", f"{primary} {key}")
                continue
            low = c[COMMITTED]
            high = low + c[UNKNOWN] + c[UNDOCUMENTED]
            if not low <= value <= high:
                r.violate(
                    "counter_out_of_bounds",
                    f"{primary} {key}: value {value}, acknowledged {low}, at most {high}",
                )
            r.add("increments.unknown_committed", max(0, value - low) if c[UNKNOWN] else 0)
