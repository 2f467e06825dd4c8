"""The one error classifier: any driver exception -> a :class:`Category`.

Works for psycopg 3, psycopg2, mysqlclient, PyMySQL (and mysql-connector),
raw or already translated by Django (the driver's exception is then the
``__cause__``). Evidence is weighed in this order, the first that speaks wins:

1. the project's own exceptions (``OutcomeUnknown``...), and driver flags
   saying the connection is broken (psycopg 3 ``broken``, psycopg2
   ``closed == 2``, on the connection passed in or the error's cursor);
2. the SQLSTATE: an exact code first (for refinements), then its two-letter
   *class*, so codes a table does not list still land in the right place;
3. the MySQL/MariaDB error number;
4. the message text (client-side errors without a code), then a libpq
   handle in state ``BAD`` attached to the error;
5. ``OSError`` causes (refused, reset, timed out...).

``RESILIENT_DB["ERROR_CODES"]`` adds or overrides codes (strings are SQLSTATEs:
five characters, or two for a whole class; integers are error numbers). An
``IntegrityError`` or ``DataError``, and SQLSTATE classes 22, 23 and 42, are
never a target failure, whatever the settings say.
"""

from __future__ import annotations

import errno as os_errno
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from resilient_db.conf import get_settings
from resilient_db.health.error_codes import (
    ERRNO_CODES,
    MESSAGES,
    NEVER_TARGET_CLASSES,
    SQLSTATE_CLASSES,
    SQLSTATE_CODES,
    Category,
)

__all__ = ["Category", "Verdict", "classify", "explain", "raised_by_django"]

C = Category


_MAX_CHAIN = 16


@dataclass(frozen=True)
class Verdict:
    """A category and the evidence that decided it (for logs and tests)."""

    category: Category
    evidence: str


def classify(
    exc: BaseException, *, connecting: bool = False, connection: Any = None
) -> Category:
    """Return the category of ``exc``.

    ``connecting`` says the error came from opening a connection (so nothing
    was sent and an otherwise unexplained ``OperationalError`` is a failed
    connect). ``connection`` is the raw driver connection, if at hand, whose
    ``broken``/``closed`` flags are the strongest evidence of a lost session.
    """
    return explain(exc, connecting=connecting, connection=connection).category


def explain(exc: BaseException, *, connecting: bool = False, connection: Any = None) -> Verdict:
    """Return the category of ``exc`` with the evidence that decided it."""
    verdict = _explain(exc, connection)
    category = verdict.category
    chain = _chain(exc)
    if category.target_failed and any(_is_data_error(e) for e in chain):
        return Verdict(C.QUERY_ERROR, f"{type(exc).__name__} is never a target failure")
    if connecting:
        if category is C.CONNECTION_LOST:
            return Verdict(C.CANNOT_CONNECT, verdict.evidence + " (while connecting)")
        if category is C.QUERY_ERROR and verdict.evidence == "no evidence" and any(
            _is_operational(e) for e in chain
        ):
            return Verdict(C.CANNOT_CONNECT, "operational error while connecting")
    return verdict


def _explain(exc: BaseException, connection: Any) -> Verdict:
    # The evidence is weighed in the order of the module docstring; each
    # step returns a verdict when it speaks, None to hand over to the next.
    early = _before_the_driver(exc)
    if early is not None:
        return early
    chain = _chain(exc)
    custom_states, custom_errnos = _custom_codes()

    states = [s for s in (_sqlstate(e) for e in chain) if s]
    for state in states:
        if SQLSTATE_CODES.get(state) is C.OUTCOME_UNKNOWN:
            return Verdict(C.OUTCOME_UNKNOWN, f"SQLSTATE {state}")

    # 1. Driver flags: a broken connection is lost whatever the message says.
    if _broken(connection) or any(_broken_cursor(e) for e in chain):
        return Verdict(C.CONNECTION_LOST, "driver reports the connection broken")
    verdict = (
        _by_sqlstate(states, custom_states)  # 2.
        or _by_errno(chain, states, custom_errnos)  # 3.
        or _by_message(chain)  # 4.
        or _by_socket(exc)  # 5.
    )
    return verdict or Verdict(C.QUERY_ERROR, "no evidence")


def _before_the_driver(exc: BaseException) -> Verdict | None:
    """Judge what the driver never saw: the project's, the pool's and Django's own errors."""
    own = _own_exception(exc)
    if own is not None:
        return Verdict(own, f"{type(exc).__name__}")
    if any(_from_pool(e) for e in (exc, exc.__cause__)):
        # PoolTimeout, TooManyRequests, PoolClosed: raised by the pool in this
        # process; the server may be perfectly fine (a full pool is not an outage).
        return Verdict(C.POOL, f"{type(exc).__name__} from the local connection pool")
    if raised_by_django(exc):
        # Django raised it before anything reached the server (a broken
        # transaction, a closed cursor...). Its __cause__ is history, such as
        # the error of an earlier statement kept in connection.rollback_exc,
        # and the connection's flags describe that history too: neither says
        # anything about this statement.
        return Verdict(C.QUERY_ERROR, f"{type(exc).__name__} raised by Django itself")
    return None


def _by_sqlstate(states: list[str], custom: Mapping[str, Category]) -> Verdict | None:
    """Step 2: the SQLSTATE, settings first, exact code before class."""
    for state in states:
        found, what = _lookup_state(state, custom)
        if found is not None:
            if found.target_failed and state[:2] in NEVER_TARGET_CLASSES:
                found = C.QUERY_ERROR
            return Verdict(found, f"{what} {state}")
    return None


def _by_errno(
    chain: list[BaseException], states: list[str], custom: Mapping[int, Category]
) -> Verdict | None:
    """Step 3: the MySQL/MariaDB error number."""
    errnos: list[int] = []
    for e in chain:
        number = _errno(e)
        if number is None:
            continue
        errnos.append(number)
        found = custom.get(number)
        if found is not None:
            return Verdict(found, f"ERROR_CODES errno {number}")
        found = ERRNO_CODES.get(number)
        if found is C.READ_ONLY and number == 1290 and "read" not in _message(e).lower():
            # 1290 is any "the server runs with option X"; only --read-only is a role.
            found = C.QUERY_ERROR
        if found is C.SERVER_STARTING and number == 1047 and "wsrep" not in _message(e).lower():
            # 1047 is MySQL's "unknown command" too; only Galera's WSREP
            # variant says the node is not ready for application use.
            found = C.QUERY_ERROR
        if found is not None:
            return Verdict(found, f"errno {number}")
        if number == 0 and _is_interface(e):
            # PyMySQL raises InterfaceError(0, '') for a connection that is gone.
            return Verdict(C.CONNECTION_LOST, "InterfaceError 0")
    if states and not errnos:
        # A server answered with a code we do not list: an ordinary query error.
        return Verdict(C.QUERY_ERROR, f"SQLSTATE {states[0]}")
    return None


def _by_message(chain: list[BaseException]) -> Verdict | None:
    """Step 4: the message text, then a libpq handle in state BAD."""
    for e in chain:
        text = _message(e).lower()
        if not text:
            continue
        for category, fragments in MESSAGES:
            for fragment in fragments:
                if fragment in text:
                    return Verdict(category, f"message {fragment!r}")

    # A libpq handle in state BAD on the error itself: weaker than a
    # connection's own flag (psycopg 3 also attaches one to failed connects,
    # whose message said more above).
    if any(_bad_pgconn(e) for e in chain):
        return Verdict(C.CONNECTION_LOST, "libpq connection status BAD")
    return None


def _by_socket(exc: BaseException) -> Verdict | None:
    """Step 5: socket-level causes, following ``__context__`` too."""
    for e in _chain(exc, context=True):
        found = _os_error(e)
        if found is not None:
            return Verdict(found, f"{type(e).__name__}")
    return None


def _lookup_state(
    state: str, custom: Mapping[str, Category]
) -> tuple[Category | None, str]:
    for table, key, what in (
        (custom, state, "ERROR_CODES"),
        (custom, state[:2], "ERROR_CODES class"),
        (SQLSTATE_CODES, state, "SQLSTATE"),
        (SQLSTATE_CLASSES, state[:2], "SQLSTATE class"),
    ):
        found = table.get(key)
        if found is not None:
            return found, what
    return None, ""


def _chain(exc: BaseException, *, context: bool = False) -> list[BaseException]:
    return list(_walk(exc, context))


def _walk(exc: BaseException, context: bool) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(current))
        yield current
        nxt = current.__cause__
        if nxt is None and context and not current.__suppress_context__:
            nxt = current.__context__
        current = nxt


def _from_pool(exc: BaseException | None) -> bool:
    return exc is not None and type(exc).__module__.split(".")[0] == "psycopg_pool"


def raised_by_django(exc: BaseException) -> bool:
    """Tell whether Django raised ``exc`` itself rather than translating a driver's error.

    ``DatabaseErrorWrapper`` translates a driver error into the Django class
    of the same name with the same ``args``, raised ``from`` the driver's
    error. A Django error chained to anything else (``TransactionManagementError``
    is raised ``from connection.rollback_exc``) is Django's own. One without a
    cause is judged by its text, as a driver's would be.
    """
    from django.db.transaction import TransactionManagementError

    if not type(exc).__module__.startswith("django."):
        return False
    if isinstance(exc, TransactionManagementError):
        return True
    cause = exc.__cause__
    if cause is None or isinstance(cause, OSError):
        return False
    return type(cause).__module__.startswith("django.") or cause.args != exc.args


def _own_exception(exc: BaseException) -> Category | None:
    from resilient_db.exceptions import (
        AllTargetsDown,
        ConnectionLost,
        NodeNotReady,
        OutcomeUnknown,
    )

    if isinstance(exc, NodeNotReady):
        return C.SERVER_STARTING
    if isinstance(exc, OutcomeUnknown):
        return C.OUTCOME_UNKNOWN
    if isinstance(exc, ConnectionLost):
        return C.CONNECTION_LOST
    if isinstance(exc, AllTargetsDown):
        return C.CANNOT_CONNECT
    return None


def _mro_names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


def _is_data_error(exc: BaseException) -> bool:
    return bool(_mro_names(exc) & {"IntegrityError", "DataError"})


def _is_operational(exc: BaseException) -> bool:
    return bool(_mro_names(exc) & {"OperationalError", "InterfaceError"}) or isinstance(
        exc, OSError
    )


def _is_interface(exc: BaseException) -> bool:
    return "InterfaceError" in _mro_names(exc)


def _sqlstate(exc: BaseException) -> str | None:
    # psycopg 3: .sqlstate; psycopg2: .pgcode; mysql-connector: .sqlstate.
    for attr in ("sqlstate", "pgcode"):
        value = getattr(exc, attr, None)
        if isinstance(value, str) and len(value) == 5:
            return value.upper()
    return None


def _errno(exc: BaseException) -> int | None:
    if isinstance(exc, OSError):
        return None  # an OS errno (ECONNREFUSED...), another namespace
    value = getattr(exc, "errno", None)  # mysql-connector
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    args = exc.args
    # MySQLdb and PyMySQL: args == (errno, message); Django keeps the args.
    if args and isinstance(args[0], int) and not isinstance(args[0], bool):
        return args[0]
    return None


def _message(exc: BaseException) -> str:
    args = exc.args
    if len(args) >= 2 and isinstance(args[0], int) and isinstance(args[1], str):
        return args[1]
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the real error
        return ""


def _broken(connection: Any) -> bool:
    if connection is None:
        return False
    if getattr(connection, "broken", False) is True:  # psycopg 3
        return True
    closed = getattr(connection, "closed", None)
    # psycopg2: 1 = closed by us, 2 = lost; psycopg 3 has a bool (ignored here).
    return isinstance(closed, int) and not isinstance(closed, bool) and closed == 2


def _broken_cursor(exc: BaseException) -> bool:
    cursor = getattr(exc, "cursor", None)  # psycopg2 errors keep the cursor
    return cursor is not None and _broken(getattr(cursor, "connection", None))


def _bad_pgconn(exc: BaseException) -> bool:
    pgconn = getattr(exc, "pgconn", None)  # psycopg 3
    if pgconn is None:
        return False
    try:
        status = pgconn.status
    except Exception:  # noqa: BLE001 - a finished PGconn may refuse; that is no evidence
        return False
    return int(status) == 1  # ConnStatus.BAD


def _os_error(exc: BaseException) -> Category | None:
    if isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
        return C.CANNOT_CONNECT
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return C.CONNECTION_LOST
    if isinstance(exc, TimeoutError):
        return C.CONNECTION_LOST
    if isinstance(exc, OSError) and exc.errno is not None:
        e = os_errno
        if exc.errno in (e.EHOSTUNREACH, e.ENETUNREACH, e.EHOSTDOWN, e.ENETDOWN):
            return C.CANNOT_CONNECT
        if exc.errno in (e.ECONNRESET, e.EPIPE, e.ETIMEDOUT, e.ENOTCONN):
            return C.CONNECTION_LOST
    return None


_custom_source: object = None
_custom_tables: tuple[Mapping[str, Category], Mapping[int, Category]] = ({}, {})


def _custom_codes() -> tuple[Mapping[str, Category], Mapping[int, Category]]:
    """Return the ERROR_CODES tables, rebuilt when the settings object changes."""
    global _custom_source, _custom_tables
    try:
        codes = get_settings().error_codes
    except Exception:  # noqa: BLE001 - invalid or unconfigured settings: classify with the built-in table
        return {}, {}
    if codes is _custom_source:
        return _custom_tables
    states: dict[str, Category] = {}
    numbers: dict[int, Category] = {}
    for name, values in codes.items():
        category = Category(name)
        for value in values:
            if isinstance(value, int):
                numbers[value] = category
            elif len(value) in (2, 5):
                states[value.upper()] = category  # a SQLSTATE class or code
            elif value.isdigit():
                numbers[int(value)] = category
            else:
                states[value.upper()] = category
    _custom_source, _custom_tables = codes, (states, numbers)
    return _custom_tables
