"""Remove credentials from error text before it is stored, logged or shown.

Driver messages can quote a DSN (``password=...``), a URL (``user:pass@host``)
or, through a misconfigured option, the password itself. Everything the
registry keeps passes through :func:`mask` first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

MASK = "********"

# key=value pairs in libpq DSNs and similar: password=secret, passwd='se cret'.
_KEY_VALUE = re.compile(
    r"""(?P<key>\b(?:password|passwd|pwd|secret|sslpassword)\s*[=:]\s*)"""
    r"""(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s,;&)]+)""",
    re.IGNORECASE,
)
# scheme://user:pass@host
_URL_USERINFO = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?P<at>@)", re.I)

# Options that carry a password in a settings dict or its OPTIONS.
_SECRET_KEYS = ("PASSWORD", "password", "passwd", "sslpassword")


def mask(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with passwords replaced by asterisks."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        # Very short "secrets" would shred ordinary words; a 1-2 character
        # password is masked by the key=value and URL rules when quoted there.
        if len(secret) >= 3:
            text = text.replace(secret, MASK)
    text = _URL_USERINFO.sub(lambda m: f"{m['head']}{MASK}{m['at']}", text)
    return _KEY_VALUE.sub(lambda m: f"{m['key']}{MASK}", text)


class Secrets(frozenset[str]):
    """A set of passwords whose repr never shows them.

    Code keeps these in local variables and attributes; Django's error reports
    (the DEBUG page, the admin e-mail) print both, whatever the filter.
    """

    def __repr__(self) -> str:
        return f"<{len(self)} secret{'' if len(self) == 1 else 's'} hidden>"

    def __or__(self, other: AbstractSet[Any]) -> Secrets:
        return Secrets(frozenset.__or__(self, other))

    __ror__ = __or__


def secrets_of(*settings_dicts: Mapping[str, Any] | None) -> Secrets:
    """Return every password found in DATABASES-style dicts (and their OPTIONS)."""
    found: set[str] = set()
    for sd in settings_dicts:
        if not sd:
            continue
        for mapping in (sd, sd.get("OPTIONS") or {}):
            if not isinstance(mapping, Mapping):
                continue
            for key in _SECRET_KEYS:
                value = mapping.get(key)
                if isinstance(value, str) and value:
                    found.add(value)
    return Secrets(found)
