"""Load generator and bookkeeping for the HA tests: what was acknowledged, lost, doubled."""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass
class Outcome:
    """One request of the load: when, how long, what it was, where it ran, how it ended."""

    started: float
    seconds: float
    kind: str
    ok: bool
    target: str | None
    token: str | None
    error: str = ""


@dataclasses.dataclass
class Load:
    """Two threads, each alternating a write (a unique token) and a read."""

    backend: type[Any]
    settings_dict: dict[str, Any]
    alias: str
    table: str
    outcomes: list[Outcome] = dataclasses.field(default_factory=list)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    pause: float = 0.02
    #: Reads go to this alias (a replica alias) when set; else to ``alias``.
    read_settings: dict[str, Any] | None = None
    read_alias: str = ""

    def _worker(self) -> None:
        db = self.backend(copy.deepcopy(self.settings_dict), alias=self.alias)
        reader = db
        if self.read_settings is not None:
            reader = self.backend(copy.deepcopy(self.read_settings), alias=self.read_alias)
        try:
            while not self.stop.is_set():
                self._one(db, "write")
                self._one(reader, "read")
                # The request boundary Django's handlers give every connection
                # (close_old_connections): a broken one is closed here.
                db.close_if_unusable_or_obsolete()
                if reader is not db:
                    reader.close_if_unusable_or_obsolete()
                time.sleep(self.pause)
        finally:
            db.close()
            reader.close()

    def _one(self, db: Any, kind: str) -> None:
        token = uuid.uuid4().hex if kind == "write" else None
        began = time.monotonic()
        try:
            with db.cursor() as cursor:
                if token is not None:
                    cursor.execute(f"INSERT INTO {self.table} (token) VALUES (%s)", [token])
                else:
                    cursor.execute(f"SELECT COUNT(*) FROM {self.table}")
                    cursor.fetchone()
            ok, error = True, ""
        except Exception as exc:  # noqa: BLE001 - every failure is counted, none may pass silently
            # The driver's error too: it tells how the connection ended.
            cause = f" [{type(exc.__cause__).__name__}: {exc.__cause__}]" if exc.__cause__ else ""
            ok, error = False, f"{type(exc).__name__}: {exc}{cause}"[:600]
        # Stock Django's wrapper (the comparison runs) has no session.
        session = getattr(db, "resilience", None)
        chosen = session.target if session is not None else None
        target = chosen.label if chosen is not None else None
        self.outcomes.append(
            Outcome(began, time.monotonic() - began, kind, ok, target, token, error)
        )

    def run(self, seconds: float, fault: Callable[[], None], fault_at: float) -> None:
        """Run the load for ``seconds``, calling ``fault`` after ``fault_at`` seconds."""
        threads = [threading.Thread(target=self._worker) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            time.sleep(fault_at)
            fault()
            time.sleep(max(0.0, seconds - fault_at))
        finally:
            self.stop.set()
            for t in threads:
                t.join(timeout=60.0)

    def acknowledged(self) -> list[str]:
        """Return the tokens whose write succeeded."""
        return [o.token for o in self.outcomes if o.kind == "write" and o.ok and o.token]

    def failed(self, kind: str | None = None) -> list[Outcome]:
        """Return the failed requests (of ``kind``)."""
        return [o for o in self.outcomes if not o.ok and (kind is None or o.kind == kind)]

    def worst(self) -> float:
        """Return the longest request in seconds."""
        return max((o.seconds for o in self.outcomes), default=0.0)


def lost_and_doubled(acknowledged: list[str], stored: dict[str, int]) -> tuple[list[str], list[str]]:
    """Return the acknowledged tokens missing from ``stored`` and the tokens stored twice."""
    lost = [t for t in acknowledged if stored.get(t, 0) == 0]
    doubled = [t for t, n in stored.items() if n > 1]
    return lost, doubled
