"""One statement as Django's execute wrappers see it, to run it again after a failure."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

Execute = Callable[[str, Any, bool, dict[str, Any]], Any]


class Statement(NamedTuple):
    """The arguments an execute wrapper receives (Django's ``execute_wrapper`` protocol)."""

    execute: Execute
    sql: str
    params: Any
    many: bool
    context: dict[str, Any]

    def run(self) -> Any:
        """Run the statement through the wrappers inside this one (the driver last)."""
        return self.execute(self.sql, self.params, self.many, self.context)

    def reopen(self, db: BaseDatabaseWrapper) -> None:
        """Give the statement's cursor a fresh driver cursor on ``db``'s new connection."""
        # The ORM holds this CursorWrapper and fetches from it after
        # execute() returns, so the fresh driver cursor goes inside it; a
        # named (server-side) cursor keeps its name.
        wrapper = self.context["cursor"]
        name = getattr(wrapper.cursor, "name", None)
        with db.wrap_database_errors:
            wrapper.cursor = db.create_cursor(name)

    def close_dead_cursor(self) -> None:
        """Close the driver cursor of a lost connection now, swallowing what it raises."""
        # Django's query code closes the cursor in an ``except`` clause after a
        # failed execute(), and CursorWrapper.close() reaches the driver without
        # error translation: MySQLdb's close() reads pending results and raises a
        # raw "(2006) server has gone away", which would replace our
        # OutcomeUnknown / ConnectionLost. A cursor closed here closes as a no-op.
        wrapper = self.context.get("cursor")
        cursor = getattr(wrapper, "cursor", None)
        if cursor is not None:
            with contextlib.suppress(Exception):
                cursor.close()
