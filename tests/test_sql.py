from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_db.sql import is_read_only, strip_noise

READS = [
    "SELECT 1",
    "select * from t where name = 'DELETE FROM t'",
    'SELECT "update", "delete" FROM "t"',
    "SELECT `insert` FROM `t`",
    "  -- INSERT INTO t\nSELECT 1",
    "/* UPDATE t */ SELECT 1",
    "SHOW search_path",
    "EXPLAIN SELECT * FROM t",
    "EXPLAIN ANALYZE SELECT * FROM t",
    "VALUES (1), (2)",
    "WITH x AS (SELECT 1) SELECT * FROM x",
    "SELECT 1;",
    "SELECT E'it''s \\' DROP'",
]
WRITES = [
    "INSERT INTO t VALUES (1)",
    "UPDATE t SET a = 1",
    "DELETE FROM t",
    "SELECT * FROM t FOR UPDATE",
    "SELECT * FROM t FOR NO KEY UPDATE",
    "SELECT * FROM t FOR SHARE",
    "SELECT * FROM t LOCK IN SHARE MODE",
    "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
    "SELECT nextval('s')",
    "SELECT pg_advisory_lock(1)",
    # A quoted or schema-qualified name calls the same function.
    'SELECT "pg_advisory_lock"(1)',
    'SELECT pg_catalog."pg_advisory_lock" (1)',
    'SELECT pg_catalog.pg_advisory_lock(1)',
    "SELECT `GET_LOCK`('x', 1)",
    'SELECT "NEXTVAL"(\'s\')',
    "SELECT GET_LOCK('x', 1)",
    "SELECT a INTO b FROM t",
    "EXPLAIN ANALYZE DELETE FROM t",
    "SELECT 1; DELETE FROM t",
    # Dialects disagree: in MySQL "#" starts a comment and a backslash escapes a
    # quote, in PostgreSQL neither; $$ quotes only in PostgreSQL. A statement is
    # a read only if it is one in both readings.
    "SELECT '\\' # '; DELETE FROM t",
    "SELECT $$; DELETE FROM t; $$",
    "CREATE TABLE t (a int)",
    "SET search_path = x",
    "CALL p()",
    "",
    "   ",
    "BEGIN",
    "COMMIT",
]


@pytest.mark.parametrize("sql", READS)
def test_reads(sql: str) -> None:
    assert is_read_only(sql)


@pytest.mark.parametrize("sql", WRITES)
def test_writes(sql: str) -> None:
    assert not is_read_only(sql)


def test_noise_is_blanked() -> None:
    assert "DELETE" not in strip_noise("SELECT 'DELETE' -- DELETE\n /* DELETE */")


write_keywords = st.sampled_from(
    ["INSERT INTO t VALUES (1)", "UPDATE t SET a=1", "DELETE FROM t", "DROP TABLE t"]
)


@given(st.text(max_size=40), write_keywords)
def test_appending_a_second_statement_is_never_a_read(prefix: str, write: str) -> None:
    assert not is_read_only(f"SELECT {prefix!r}; {write}")


@given(st.text(max_size=80))
def test_never_raises(sql: str) -> None:
    assert is_read_only(sql) in (True, False)


@given(st.text(alphabet=st.characters(blacklist_characters="'\\"), max_size=40))
def test_string_literal_contents_do_not_matter(content: str) -> None:
    assert is_read_only(f"SELECT * FROM t WHERE a = '{content}'")
