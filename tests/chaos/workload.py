"""The soak's clients: threads running mixed reads, writes and transactions with a write log.

Every write carries a key nobody else uses and is logged with its outcome, so the
accounting at the end can prove each acknowledged write is stored exactly once and
each refused one not at all. The ledger table is ``Author`` on purpose: its ``name``
has no unique constraint, so a write sent twice shows up as two rows instead of
being hidden by an ``IntegrityError``.

This module is importable without pytest so that child processes (the long form)
run exactly the same code.
"""

from __future__ import annotations

import dataclasses
import random
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from django.db import connections, transaction
from django.db.models import F

from resilient_db_testbed.load import Crew

# Outcomes of a write.
COMMITTED = "committed"  # acknowledged: must be stored exactly once
FAILED = "failed"  # a documented "nothing was done" error: must not be stored
UNKNOWN = "unknown"  # OutcomeUnknown: stored at most once
UNDOCUMENTED = "undocumented"  # anything else: a bug

# Kinds of write.
SINGLE = "single"  # one INSERT in autocommit
TXN = "txn"  # an Author and two Books in one atomic() block
INCR = "incr"  # UPDATE value = value + 1 on the worker's counter row

WRITE_ALIASES = ("default", "bouncers", "mysql", "mysql_peers")
READ_ALIASES = ("default", "replica", "bouncers", "mysql", "mysql_replica", "mysql_peers")
# Reads chosen by the router (no alias given by the caller): group primary -> label.
ROUTED = {"default": "routed:default", "mysql": "routed:mysql"}
PRIMARY_OF = {
    "default": "default",
    "replica": "default",
    "bouncers": "default",
    "mysql": "mysql",
    "mysql_replica": "mysql",
    "mysql_peers": "mysql",
}


@dataclasses.dataclass
class Write:
    """One logged write."""

    key: str
    alias: str
    kind: str
    started: float
    ended: float = 0.0
    outcome: str = ""
    error: str = ""


@dataclasses.dataclass
class Read:
    """One logged read (only failures keep their error text)."""

    alias: str
    started: float
    ended: float
    ok: bool
    error: str = ""
    routed_to: str = ""  # the alias the router chose (reads through the router)


@dataclasses.dataclass
class WorkerLog:
    """Everything one worker did."""

    name: str
    writes: list[Write] = dataclasses.field(default_factory=list)
    reads: list[Read] = dataclasses.field(default_factory=list)
    counters: dict[str, str] = dataclasses.field(default_factory=dict)  # alias -> counter key
    crashed: str = ""  # a traceback if the worker itself died (a harness bug)
    finished: bool = False

    def to_json(self) -> dict[str, Any]:
        """Return the log as plain JSON-able data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerLog:
        """Rebuild a log written by :meth:`to_json`."""
        return cls(
            name=data["name"],
            writes=[Write(**w) for w in data["writes"]],
            reads=[Read(**r) for r in data["reads"]],
            counters=dict(data["counters"]),
            crashed=data["crashed"],
            finished=data["finished"],
        )


def classify_write_error(exc: BaseException) -> str:
    """Return the write outcome that ``exc`` documents (FAILED, UNKNOWN or UNDOCUMENTED)."""
    from resilient_db.exceptions import AllTargetsDown, ConnectionLost, OutcomeUnknown

    if isinstance(exc, OutcomeUnknown):
        return UNKNOWN
    # Nothing was sent (no target accepted a connection) or the transaction it
    # belonged to is gone (ConnectionLost inside atomic(), raised before COMMIT).
    if isinstance(exc, (AllTargetsDown, ConnectionLost)):
        return FAILED
    return UNDOCUMENTED


def describe(exc: BaseException) -> str:
    """Return ``Type: message`` on one line, bounded."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {text}"[:300]


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """What one worker does and until when."""

    name: str
    run_id: str
    stop_at: float  # wall clock (time.time()): comparable across processes
    seed: int
    write_aliases: Sequence[str] = WRITE_ALIASES
    read_aliases: Sequence[str] = READ_ALIASES
    routed: Sequence[str] = tuple(ROUTED)
    # A unit of work ends every this many operations: connections are closed as
    # Django does at the end of a request (CONN_MAX_AGE = 0).
    ops_per_unit: int = 12
    pause: float = 0.005  # between operations, so the loop never spins
    max_ops: int = 1_000_000


class Worker:
    """Run mixed operations until ``spec.stop_at``, logging every write and read."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        # The paced loop is the test bed's (shared with the demo); its deadline is on
        # the wall clock, the one clock the soak's child processes share.
        self.crew = Crew(pause=spec.pause, deadline=spec.stop_at, clock=time.time)
        self.log = WorkerLog(spec.name)
        self.rng = random.Random(spec.seed)
        self.seq = 0

    # -- operations -------------------------------------------------------------------------

    def _key(self) -> str:
        self.seq += 1
        return f"{self.spec.run_id}-{self.spec.name}-{self.seq}"

    def write_single(self, alias: str) -> None:
        """INSERT one ledger row in autocommit."""
        from tests.testapp.models import Author

        key = self._key()
        self._record(alias, SINGLE, key, lambda: Author.objects.using(alias).create(name=key))

    def write_txn(self, alias: str) -> None:
        """INSERT an Author and two Books in one transaction."""
        from tests.testapp.models import Author, Book

        key = self._key()

        def action() -> None:
            with transaction.atomic(using=alias):
                author = Author.objects.using(alias).create(name=key)
                Book.objects.using(alias).create(title=f"{key}/1", author=author)
                Book.objects.using(alias).create(title=f"{key}/2", author=author)

        self._record(alias, TXN, key, action)

    def increment(self, alias: str) -> None:
        """UPDATE the worker's counter row by one (not idempotent: a double shows)."""
        from tests.testapp.models import Item

        counter = self.log.counters[PRIMARY_OF[alias]]
        key = f"{counter}#{self._key()}"

        def action() -> None:
            changed = Item.objects.using(alias).filter(key=counter).update(value=F("value") + 1)
            if changed != 1:
                raise AssertionError(f"counter row {counter} matched {changed} rows")

        self._record(alias, INCR, key, action)

    def _record(self, alias: str, kind: str, key: str, action: Callable[[], object]) -> None:
        write = Write(key=key, alias=alias, kind=kind, started=time.time())
        # Logged BEFORE it is sent: a worker that dies mid-write still accounts for it.
        self.log.writes.append(write)
        try:
            action()
        except Exception as exc:  # every exception is judged by the accounting
            write.outcome = classify_write_error(exc)
            write.error = describe(exc)
        else:
            write.outcome = COMMITTED
        finally:
            write.ended = time.time()

    def read(self, alias: str) -> None:
        """Read a few ledger rows on ``alias`` (or through the router for ``routed:*``)."""
        from django.db import router

        from tests.testapp.models import Author

        started = time.time()
        routed_to = ""
        try:
            if alias.startswith("routed:"):
                from resilient_db.routers import get_replica

                group = alias.split(":", 1)[1]
                if group == "default":
                    qs = Author.objects.all()  # DATABASE_ROUTERS picks the alias
                    routed_to = router.db_for_read(Author) or ""
                else:
                    routed_to = get_replica(group)
                    qs = Author.objects.using(routed_to)
            else:
                qs = Author.objects.using(alias)
            list(qs.filter(name__startswith=f"{self.spec.run_id}-{self.spec.name}-")[:5])
        except Exception as exc:  # every exception is judged by the accounting
            self.log.reads.append(
                Read(alias, started, time.time(), False, describe(exc), routed_to))
        else:
            self.log.reads.append(Read(alias, started, time.time(), True, "", routed_to))

    # -- the loop ---------------------------------------------------------------------------

    def setup_counters(self) -> None:
        """Create this worker's counter rows on each primary (before faults start)."""
        from tests.testapp.models import Item

        for primary in sorted({PRIMARY_OF[a] for a in self.spec.write_aliases}):
            key = f"{self.spec.run_id}-{self.spec.name}-ctr-{primary}"
            Item.objects.using(primary).create(key=key, value=0)
            self.log.counters[primary] = key

    def step(self) -> None:
        """Run one randomly chosen operation as its own unit of work, as a request would."""
        from resilient_db.routers import unit_of_work

        # Without a unit boundary the whole thread would be one unit: after its
        # first write every routed read would go to the primary (read-your-writes).
        with unit_of_work():
            self._step()

    def _step(self) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.45:
            choices = [*self.spec.read_aliases, *(ROUTED[g] for g in self.spec.routed)]
            self.read(rng.choice(choices))
        elif roll < 0.75:
            self.write_single(rng.choice(list(self.spec.write_aliases)))
        elif roll < 0.9:
            self.write_txn(rng.choice(list(self.spec.write_aliases)))
        else:
            self.increment(rng.choice(list(self.spec.write_aliases)))

    def run(self) -> WorkerLog:
        """Loop until the stop time (bounded in count too), then close every connection."""
        try:
            for n in range(self.spec.max_ops):
                if not self.crew.running():
                    break
                self.step()
                if n % self.spec.ops_per_unit == self.spec.ops_per_unit - 1:
                    close_all_quietly()
                self.crew.pause()
            self.log.finished = True
        except BaseException:  # a harness bug: reported, never swallowed silently
            self.log.crashed = traceback.format_exc()
        finally:
            close_all_quietly()
        return self.log


def close_all_quietly() -> None:
    """Close this thread's connections; a dead one may raise on close, which is fine."""
    for conn in connections.all(initialized_only=True):
        try:
            conn.close()
        except Exception:  # closing a connection whose server is gone may raise
            conn.connection = None


class ThreadPool:
    """Run workers in threads and join them with a deadline."""

    def __init__(self, specs: Sequence[WorkerSpec]) -> None:
        self.workers = [Worker(spec) for spec in specs]
        self.crew = Crew(pause=0.0)  # each worker paces and stops itself (its own spec)
        for worker in self.workers:
            self.crew.add(f"chaos-{worker.spec.name}", worker.run)

    def setup(self) -> None:
        """Create every worker's counter rows."""
        for worker in self.workers:
            worker.setup_counters()
        close_all_quietly()

    def start(self) -> None:
        """Start every worker thread."""
        self.crew.start()

    def join(self, deadline: float) -> list[str]:
        """Wait until ``deadline`` (monotonic); return the names of threads still running."""
        return self.crew.join(deadline)

    def logs(self) -> list[WorkerLog]:
        """Return every worker's log."""
        return [w.log for w in self.workers]
