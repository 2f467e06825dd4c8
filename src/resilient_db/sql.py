"""Tell a read-only statement from one that may change something.

One classifier, used by the backends (only reads are retried after a lost
connection) and by write detection for pinning (only statements that may
write pin a client to the primary). It errs on the side of "may write": a
statement we cannot prove read-only is treated as a write, which is never
retried and always pins.
"""

from __future__ import annotations

import re
from functools import lru_cache

from resilient_db.vendors import mysql as mysql_dialect
from resilient_db.vendors import postgresql

_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
# A quoted name called as a function: "pg_advisory_lock"(1) or `GET_LOCK`('x', 1)
# calls the same function as the bare name, and blanking the quotes would hide it.
_QUOTED_CALL = re.compile(r"""(?:"((?:[^"]|"")*)"|`((?:[^`]|``)*)`)\s*\(""")

_READ_LEADS = frozenset({"SELECT", "SHOW", "EXPLAIN", "VALUES", "WITH", "TABLE", "DESCRIBE", "DESC"})
_WRITE_WORDS = frozenset(
    {"INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE", "TRUNCATE", "CREATE", "DROP", "ALTER",
     "GRANT", "REVOKE", "COPY", "CALL", "DO", "LOCK", "INTO", "ANALYZE", "ANALYSE", "NOTIFY",
     "LISTEN", "SET", "HANDLER", "LOAD"}
)
# Functions that change state even inside a SELECT, in either dialect.
_SIDE_EFFECT_FUNCS = postgresql.SIDE_EFFECT_FUNCTIONS | mysql_dialect.SIDE_EFFECT_FUNCTIONS


def strip_noise(sql: str, *, mysql: bool = False) -> str:
    """Return ``sql`` with literals, quoted identifiers and comments blanked."""
    return (mysql_dialect.NOISE if mysql else postgresql.NOISE).sub(" ", sql)


@lru_cache(maxsize=2048)
def is_read_only(sql: str) -> bool:
    """Return True when ``sql`` can only read, so re-running it is harmless."""
    if _calls_quoted_side_effect(sql):
        return False
    # Literals, quoted identifiers and comments are blanked before keywords are
    # searched, so a string containing "DELETE" does not make a SELECT a write.
    # The two dialects disagree on what is a literal or a comment (MySQL: "#"
    # starts a comment, a backslash escapes a quote, "..." is a string;
    # PostgreSQL: none of these), and the SQL does not say which server it is
    # for, so a statement is a read only if it reads as one in BOTH dialects.
    return _reads_only(strip_noise(sql)) and _reads_only(strip_noise(sql, mysql=True))


def _calls_quoted_side_effect(sql: str) -> bool:
    # Looked for in the raw text: a match inside a string literal only makes
    # a read count as a write, the safe direction.
    for match in _QUOTED_CALL.finditer(sql):
        name = match.group(1) if match.group(1) is not None else match.group(2)
        if name.upper() in _SIDE_EFFECT_FUNCS:
            return True
    return False


def _reads_only(text: str) -> bool:
    words = [w.upper() for w in _WORD.findall(text)]
    if not words or words[0] not in _READ_LEADS:
        return False
    # One statement only: "SELECT 1; DELETE ..." is not a read.
    if ";" in text.strip().rstrip(";"):
        return False
    if words[0] == "EXPLAIN" and ("ANALYZE" in words or "ANALYSE" in words):
        # EXPLAIN ANALYZE runs the statement; it is a read only if that is.
        return _reads_only(_after_explain(text))
    upper = set(words)
    if upper & _WRITE_WORDS:
        return False
    # SELECT ... FOR UPDATE / FOR SHARE / FOR NO KEY UPDATE / LOCK IN SHARE MODE
    for i, w in enumerate(words[:-1]):
        if w == "FOR" and words[i + 1] in {"UPDATE", "SHARE", "NO", "KEY"}:
            return False
    if "LOCK" in upper:
        return False
    return not any(
        w in _SIDE_EFFECT_FUNCS and _is_call(text, w) for w in upper & _SIDE_EFFECT_FUNCS
    )


def _after_explain(text: str) -> str:
    match = re.search(r"\b(SELECT|WITH|VALUES|TABLE|INSERT|UPDATE|DELETE|MERGE)\b", text, re.I)
    return text[match.start():] if match else ""


def _is_call(text: str, name: str) -> bool:
    return re.search(rf"\b{name}\s*\(", text, re.IGNORECASE) is not None
