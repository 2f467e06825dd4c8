"""Read single values of ``RESILIENT_DB`` (numbers, flags, choices, strings), collecting problems.

The building blocks of :mod:`resilient_db.settings_parser`: each reader returns
the value when it is usable, else records a :class:`~resilient_db.problems.Problem`
(id, key, message, hint) and returns the default. Nothing here raises on user
input, whatever its type or size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

from resilient_db.problems import Problem
from resilient_db.ranges import RANGES


def shown(value: object, limit: int = 60) -> str:
    """Return a short repr of a user's value that cannot itself raise."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        # repr() of a huge int is slow, and past 4300 digits it raises.
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    # A user's object with a broken __repr__ must still give a message.
    except Exception:  # noqa: BLE001
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


class ValueParser:
    """Read one value of a user's dict, or record a Problem and return the default."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def problem(
        self, id: str, key: str, msg: str, hint: str, level: Literal["error", "warning"] = "error"
    ) -> None:
        self.problems.append(Problem(id, key, msg, hint, level))

    def mapping(self, value: object, key: str) -> Mapping[str, Any] | None:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(
                "resilient_db.E002",
                key,
                f"{key} must be a dict, not {type(value).__name__}.",
                f"Write {key} as a dict, e.g. {{}}.",
            )
            return None
        return cast(Mapping[str, Any], value)

    def unknown_keys(self, value: Mapping[str, Any], allowed: frozenset[str], key: str) -> None:
        for name in value:
            if name not in allowed:
                self.problem(
                    "resilient_db.E003",
                    f"{key}[{shown(name)}]",
                    f"{key} has an unknown key {shown(name)}.",
                    f"Valid keys are: {', '.join(sorted(allowed))}.",
                )

    def number(
        self, value: Mapping[str, Any], name: str, key: str, default: float, where: str
    ) -> float:
        """Return ``value[name]`` if it is inside ``RANGES[where]``, else report E004."""
        if name not in value:
            return default
        raw = value[name]
        accepted = RANGES[where]
        if not accepted.accepts(raw):
            kind = "a whole number" if accepted.whole else "a finite number"
            self.problem(
                "resilient_db.E004",
                f"{key}[{name!r}]",
                f"{key}[{name!r}] must be {kind} in the range {accepted.describe()}, "
                f"not {shown(raw)}.",
                f"Set {name} to a value in that range, e.g. {default!r} "
                "(see the Settings reference).",
            )
            return default
        return float(raw)

    def optional_number(
        self, value: Mapping[str, Any], name: str, key: str, example: float, where: str
    ) -> float | None:
        """Return a number of seconds, or None when absent, None or out of range (E004)."""
        if value.get(name) is None:
            return None
        before = len(self.problems)
        number = self.number(value, name, key, example, where)
        return None if len(self.problems) > before else number

    def integer(
        self, value: Mapping[str, Any], name: str, key: str, default: int, where: str
    ) -> int:
        """Return ``value[name]`` if it is a whole number inside ``RANGES[where]``."""
        if name not in value:
            return default
        before = len(self.problems)
        self.number(value, name, key, default, where)
        return default if len(self.problems) > before else int(value[name])

    def boolean(self, value: Mapping[str, Any], name: str, key: str, default: bool) -> bool:
        if name not in value:
            return default
        raw = value[name]
        if not isinstance(raw, bool):
            self.problem(
                "resilient_db.E005",
                f"{key}[{name!r}]",
                f"{key}[{name!r}] must be True or False, not {shown(raw)}.",
                f"Set {name} to True or False.",
            )
            return default
        return raw

    def choice(
        self, value: Mapping[str, Any], name: str, key: str, choices: Sequence[Any], default: Any
    ) -> Any:
        if name not in value:
            return default
        raw = value[name]
        if raw not in choices:
            self.problem(
                "resilient_db.E006",
                f"{key}[{name!r}]",
                f"{key}[{name!r}] is {shown(raw)}, which is not one of the accepted values.",
                f"Use one of: {', '.join(repr(c) for c in choices)}.",
            )
            return default
        return raw

    def string(
        self,
        value: Mapping[str, Any],
        name: str,
        key: str,
        default: Any,
        *,
        optional: bool = False,
        pattern: re.Pattern[str] | None = None,
        rule: str = "",
    ) -> Any:
        """Return a non-empty string (matching ``pattern`` when given), else report E007."""
        if name not in value:
            return default
        raw = value[name]
        if raw is None and optional:
            return raw
        if isinstance(raw, str) and raw and (pattern is None or pattern.fullmatch(raw)):
            return raw
        what = f"a non-empty string{', ' + rule if pattern is not None else ''}"
        self.problem(
            "resilient_db.E007",
            f"{key}[{name!r}]",
            f"{key}[{name!r}] must be {what}, not {shown(raw)}.",
            f"Set {name} to such a string, e.g. {default!r}.",
        )
        return default
