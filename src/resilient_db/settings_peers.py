"""Parse one entry of ``PEERS``: a database URL, a dict of overrides, or an alias name.

Part of :mod:`resilient_db.settings_parser`. Every malformed peer is reported
as ``resilient_db.E008`` and left out; what a driver would refuse in a
well-formed peer is judged later, against ``DATABASES`` (:mod:`resilient_db.peers`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from resilient_db.dburl import parse_database_url
from resilient_db.ranges import RANGES
from resilient_db.settings_model import PEER_KEYS, PeerSpec
from resilient_db.settings_values import ValueParser, shown

# The RANGES key prefix of a peer dict's numbers.
_PEER = "DATABASES.<alias>.PEERS[]."
# Keys of a peer dict that DATABASES itself takes as strings.
_STRING_KEYS = ("HOST", "NAME", "USER", "PASSWORD")


class PeerParser(ValueParser):
    """Read peers, reporting each malformed one (E008) instead of raising."""

    def peer(self, raw: object, key: str) -> PeerSpec | None:
        """Return the peer written as ``raw`` at ``key``, or None after reporting it."""
        if isinstance(raw, str):
            return self._peer_from_text(raw, key)
        if isinstance(raw, Mapping):
            return self._peer_from_dict(raw, key)
        self.problem(
            "resilient_db.E008",
            key,
            f"{key} must be a URL, a dict or an alias name, not {type(raw).__name__}.",
            "Write a peer as 'postgres://host:port/name', {'HOST': ..., 'PORT': ...} or 'alias'.",
        )
        return None

    def _peer_from_text(self, raw: str, key: str) -> PeerSpec | None:
        """Return a peer written as a URL or as the name of another alias."""
        if "://" in raw:
            try:
                overrides = parse_database_url(raw)
                return PeerSpec(overrides=overrides, scheme=raw.split("://", 1)[0])
            except ValueError as exc:
                self.problem(
                    "resilient_db.E008",
                    key,
                    f"{key} is not a usable database URL: {exc}.",
                    "Write a peer as 'postgres://host:port/name', a dict with HOST/PORT, "
                    "or the name of another alias in DATABASES.",
                )
                return None
        if not raw:
            self.problem(
                "resilient_db.E008",
                key,
                f"{key} is an empty string.",
                "Write a peer as a URL, a dict with HOST/PORT, or an alias name.",
            )
            return None
        return PeerSpec(overrides={}, alias=raw)

    def _peer_from_dict(self, raw: Mapping[Any, Any], key: str) -> PeerSpec | None:
        """Return a peer written as a dict of DATABASES keys that override the alias's."""
        before = len(self.problems)
        bad = sorted(shown(k) for k in raw if k not in PEER_KEYS)
        if bad:
            self.problem(
                "resilient_db.E008",
                key,
                f"{key} has unknown keys {', '.join(bad)}.",
                f"A peer dict accepts: {', '.join(sorted(PEER_KEYS))}.",
            )
        if not raw.get("HOST") and not raw.get("PORT"):
            self.problem(
                "resilient_db.E008",
                key,
                f"{key} names neither HOST nor PORT, so it is the alias itself.",
                "Give the peer at least a HOST or a PORT.",
            )
            return None
        priority = int(raw.get("PRIORITY", 0)) if self._peer_number(
            raw, "PRIORITY", key, _PEER + "PRIORITY",
            "Lower numbers are tried first; the alias's own HOST has priority 0.",
        ) else 0
        self._peer_number(
            raw, "PORT", key, _PEER + "PORT", "Give the port as a number, e.g. 6432."
        )
        self._peer_strings(raw, key)
        if raw.get("OPTIONS") is not None and not isinstance(raw["OPTIONS"], Mapping):
            self.problem(
                "resilient_db.E008",
                key,
                f"{key}['OPTIONS'] must be a dict, not {type(raw['OPTIONS']).__name__}.",
                "Write OPTIONS as a dict of driver options, as in DATABASES.",
            )
            return None
        if len(self.problems) > before:
            # Reported; a peer with a wrong value is never built (str() of a
            # 5000-digit PORT would raise), and errors stop the run time anyway.
            return None
        # A key given as None (or an empty PORT) is not set: the alias's own
        # value applies, as the checks above promise.
        overrides = {
            k: v for k, v in raw.items()
            if k in PEER_KEYS and k != "PRIORITY" and v is not None and not (k == "PORT" and v == "")
        }
        if "PORT" in overrides:
            overrides["PORT"] = str(overrides["PORT"])
        return PeerSpec(overrides=overrides, priority=priority)

    def _peer_strings(self, raw: Mapping[Any, Any], key: str) -> None:
        """Report HOST, NAME, USER or PASSWORD given as anything but a string."""
        for name in _STRING_KEYS:
            if raw.get(name) is not None and not isinstance(raw[name], str):
                self.problem(
                    "resilient_db.E008",
                    key,
                    f"{key}[{name!r}] must be a string, not {type(raw[name]).__name__}.",
                    f"Write {name} as a string, as in DATABASES.",
                )

    def _peer_number(
        self, raw: Mapping[Any, Any], name: str, key: str, where: str, hint: str
    ) -> bool:
        """Return whether a peer dict gives ``name`` as a whole number in range (else E008)."""
        if name not in raw:
            return False
        value = raw[name]
        if name == "PORT":
            if value is None or value == "":
                return False  # the alias's own PORT applies
            if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 5:
                value = int(value)
        accepted = RANGES[where]
        if accepted.accepts(value):
            return True
        self.problem(
            "resilient_db.E008",
            key,
            f"{key}[{name!r}] must be a whole number in the range {accepted.describe()}, "
            f"not {shown(value)}.",
            hint,
        )
        return False
