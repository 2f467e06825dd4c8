"""The write ledger shared by the chaos soak and the live demo.

Both send writes that each carry a key nobody else uses, log what the client was
told, and at the end count the rows each key left in the database. The rules that
turn (what the client was told, copies stored) into lost / doubled / applied despite
an error live here once; each caller keeps its own outcome names and its own way of
counting rows (the soak reads the ORM's tables, the demo the orders on the primaries).

Pure functions over plain data, so the rules are unit-tested without a database.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Settled:
    """One write set against the rows its key left behind."""

    acknowledged: bool  # the client was told it is done
    copies: int  # rows stored under its key

    @property
    def stored(self) -> bool:
        """Tell whether at least one copy is in the database."""
        return self.copies > 0

    @property
    def lost(self) -> bool:
        """Acknowledged, but nothing stored."""
        return self.acknowledged and self.copies == 0

    @property
    def doubled(self) -> bool:
        """Stored more than once (a retry nobody asked for)."""
        return self.copies > 1

    @property
    def exactly_once(self) -> bool:
        """Acknowledged and stored exactly once: what an acknowledgement promises."""
        return self.acknowledged and self.copies == 1

    @property
    def applied_despite_error(self) -> bool:
        """The client was told of a failure (or got no answer), yet a copy is stored."""
        return not self.acknowledged and self.copies > 0


def settle(acknowledged: bool, copies: int) -> Settled:
    """Set one write (acknowledged or not) against the ``copies`` stored under its key."""
    return Settled(acknowledged, copies)


@dataclasses.dataclass
class Tally:
    """The write check of one window: the client's log against the rows in the database."""

    sent: int = 0
    acknowledged: int = 0
    lost: int = 0  # acknowledged, but no row
    doubled: int = 0  # stored twice, or a second insert the client saw refused or acknowledged
    applied_despite_error: int = 0  # the client saw a failure, the row exists
    not_applied: int = 0  # the client saw a failure, no row

    def add(self, write: Settled, *, doubled_by_client: bool = False) -> None:
        """Count one settled write; ``doubled_by_client``: the client itself saw a double."""
        self.sent += 1
        if write.acknowledged:
            self.acknowledged += 1
            if write.lost:
                self.lost += 1
        elif write.applied_despite_error:
            self.applied_despite_error += 1
        else:
            self.not_applied += 1
        if write.doubled or doubled_by_client:
            self.doubled += 1


def totals(tallies: list[Tally]) -> dict[str, int]:
    """Return the write ledger of a whole run (every window added up)."""
    return {
        "sent": sum(t.sent for t in tallies),
        "acknowledged": sum(t.acknowledged for t in tallies),
        "lost": sum(t.lost for t in tallies),
        "doubled": sum(t.doubled for t in tallies),
        "not_acknowledged": sum(t.sent - t.acknowledged for t in tallies),
        "applied_despite_error": sum(t.applied_despite_error for t in tallies),
    }
