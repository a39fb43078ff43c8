"""Statement shapes: normalization rules, fingerprints, operation, control statements, shorten.

The example statements are what SQLAlchemy 2.x emits on SQLite (qmark), PostgreSQL with
asyncpg (``$1::TYPE``) and psycopg (``%(name)s``), and MySQL (``%s``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queryprof import fingerprint as fingerprint_module
from queryprof.fingerprint import (
    MAX_INPUT_CHARS,
    SHAPE_CACHE_SIZE,
    Shape,
    fingerprint,
    is_transaction_control,
    normalize,
    operation,
    shape_cache_stats,
    shape_of,
    shorten,
)

HEX16 = re.compile(r"[0-9a-f]{16}")

# -------------------------------------------------------------------------------------------
# normalize: examples, one group per rule
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # SQLite (qmark), as SQLAlchemy formats it: newlines before FROM/WHERE.
        (
            "SELECT books.id, books.title, books.author_id \nFROM books \n"
            "WHERE books.author_id = ?",
            "SELECT books.id, books.title, books.author_id FROM books WHERE books.author_id = ?",
        ),
        (
            "SELECT books.id, books.title \nFROM books \nWHERE books.id IN (__[POSTCOMPILE_id_1])",
            "SELECT books.id, books.title FROM books WHERE books.id IN (?)",
        ),
        (
            "INSERT INTO books (title, author_id) VALUES (?, ?) RETURNING id",
            "INSERT INTO books (title, author_id) VALUES (?, ?) RETURNING id",
        ),
        (
            "UPDATE books SET title=? WHERE books.id = ?",
            "UPDATE books SET title = ? WHERE books.id = ?",
        ),
        ("DELETE FROM books WHERE books.id = ?", "DELETE FROM books WHERE books.id = ?"),
        # PostgreSQL, asyncpg: numbered placeholders with casts.
        (
            "SELECT authors.id, authors.name \nFROM authors \nWHERE authors.id = $1::INTEGER",
            "SELECT authors.id, authors.name FROM authors WHERE authors.id = ?::INTEGER",
        ),
        (
            "SELECT books.id FROM books WHERE books.published_at > "
            "$1::TIMESTAMP WITH TIME ZONE LIMIT $2::INTEGER",
            "SELECT books.id FROM books WHERE books.published_at > "
            "?::TIMESTAMP WITH TIME ZONE LIMIT ?::INTEGER",
        ),
        # PostgreSQL, psycopg: pyformat, and "%%" for the modulo operator.
        (
            "SELECT users.id \nFROM users \nWHERE users.email = %(email_1)s \n LIMIT %(param_1)s",
            "SELECT users.id FROM users WHERE users.email = ? LIMIT ?",
        ),
        (
            "SELECT books.id FROM books WHERE books.id %% %(id_1)s = %(param_1)s",
            "SELECT books.id FROM books WHERE books.id % ? = ?",
        ),
        # MySQL: format placeholders and backtick-quoted identifiers.
        (
            "SELECT `order`.id, `order`.`Total` \nFROM `order` \nWHERE `order`.user_id = %s",
            "SELECT `order`.id, `order`.`Total` FROM `order` WHERE `order`.user_id = ?",
        ),
        # text() with :name binds; "::int" is a cast, not a bind.
        (
            "SELECT * FROM t WHERE id = :id AND x::int = :x_1 AND y = :Y",
            "SELECT * FROM t WHERE id = ? AND x::int = ? AND y = ?",
        ),
        ("SELECT '2024-01-01'::date", "SELECT ?::date"),
        ("SELECT x :: int", "SELECT x::int"),
    ],
)
def test_normalize_sqlalchemy_statements(sql: str, expected: str) -> None:
    assert normalize(sql) == expected


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 -- trailing comment",
        "SELECT 1 -- comment\n",
        "-- leading\nSELECT 1",
        "SELECT /* inline */ 1",
        "SELECT 1 /*controller='index',framework='django%3A4.2',route='%5Ebooks%2F'*/",
        "SELECT 1 /*traceparent='00-5bd66ef5095369c7b0d1f8f4bd33716a-c532cb4098ac3dd2-01'*/;",
        "/*!40101 SET @x = 1 */ SELECT 1",
        "SELECT 1 /* unterminated",
        "SELECT\n\t1\r\n;",
        "SELECT 1;;",
    ],
)
def test_comments_whitespace_and_semicolons_are_dropped(sql: str) -> None:
    assert normalize(sql) == "SELECT ?"


@pytest.mark.parametrize(
    "literal",
    [
        "1",
        "-1",
        "+1",
        "1.5",
        "-1.5e-10",
        ".5",
        "1e10",
        "1E+3",
        "0xFF",
        "''",
        "'x'",
        "'it''s'",
        "'multi\nline'",
        "'-- not a comment'",
        "'/* not a comment */'",
        "E'it\\'s'",
        "e'\\\\'",
        "N'national'",
        "X'DEADBEEF'",
        "$$dollar 'quoted'$$",
        "$fn$ body $$ inner $fn$",
        "TRUE",
        "false",
        "'unterminated",
    ],
)
def test_literals_become_placeholders(literal: str) -> None:
    assert normalize(f"SELECT * FROM t WHERE a = {literal}") == "SELECT * FROM t WHERE a = ?"


def test_null_stays_a_keyword() -> None:
    assert normalize("select * from t where a is null and b is not NULL") == (
        "SELECT * FROM t WHERE a IS NULL AND b IS NOT NULL"
    )


def test_binary_minus_is_not_folded_into_the_literal() -> None:
    assert normalize("SELECT a - 1, a-1, (a) - 1, -1, - 1") == "SELECT a - ?, a - ?, (a) - ?, ?, ?"


@pytest.mark.parametrize(
    "placeholder",
    ["?", "$1", "$12", "%s", "%(title_1)s", ":title", ":title_1", "__[POSTCOMPILE_title_1]"],
)
def test_every_placeholder_style_becomes_a_question_mark(placeholder: str) -> None:
    assert normalize(f"SELECT * FROM books WHERE books.title = {placeholder}") == (
        "SELECT * FROM books WHERE books.title = ?"
    )


@pytest.mark.parametrize(
    "in_list",
    [
        "(?)",
        "(?, ?, ?)",
        "(?,?,?,?)",
        "(__[POSTCOMPILE_id_1])",
        "($1, $2, $3)",
        "(%s, %s)",
        "(%(id_1_1)s, %(id_1_2)s, %(id_1_3)s)",
        "(1, 2, 3)",
        "('a', 'b')",
        "(-1, 2.5, 'x', TRUE)",
    ],
)
def test_in_lists_collapse(in_list: str) -> None:
    assert normalize(f"SELECT b.id FROM b WHERE b.id IN {in_list}") == (
        "SELECT b.id FROM b WHERE b.id IN (?)"
    )


def test_in_list_collapse_keeps_casts_and_tuples() -> None:
    assert normalize("SELECT 1 WHERE b.id IN ($1::INTEGER, $2::INTEGER, $3::INTEGER)") == (
        "SELECT ? WHERE b.id IN (?::INTEGER)"
    )
    assert normalize("SELECT 1 WHERE (a, b) NOT IN ((1, 2), (3, 4), (5, 6))") == (
        "SELECT ? WHERE (a, b) NOT IN ((?, ?))"
    )


def test_in_subquery_is_not_collapsed() -> None:
    sql = "SELECT a.id FROM a WHERE a.id IN (SELECT b.a_id FROM b WHERE b.x = ?)"
    assert normalize(sql) == sql


@pytest.mark.parametrize(
    "any_expr",
    [
        "= ANY(?)",
        "= ANY ($1)",
        "= ANY($1::INTEGER[])",
        "= ANY (ARRAY[$1, $2, $3])",
        "= ANY (ARRAY[%(p_1)s, %(p_2)s])",
        "= any(array[1, 2])",
    ],
)
def test_any_collapses(any_expr: str) -> None:
    assert normalize(f"SELECT t.id FROM t WHERE t.id {any_expr}") == (
        "SELECT t.id FROM t WHERE t.id = ANY(?)"
    )


def test_multi_row_values_collapse_to_one_row() -> None:
    many = "INSERT INTO books (title, author_id) VALUES (?, ?), (?, ?), (?, ?) RETURNING id"
    one = "INSERT INTO books (title, author_id) VALUES (?, ?) RETURNING id"
    assert normalize(many) == one
    assert normalize("INSERT INTO t (a, b) VALUES (1, 'x'),(2, 'y')") == (
        "INSERT INTO t (a, b) VALUES (?, ?)"
    )


def test_asyncpg_insertmanyvalues_with_sentinel_collapses() -> None:
    # SQLAlchemy's "insertmanyvalues" on PostgreSQL with a sentinel column.
    def statement(rows: int) -> str:
        values = ", ".join(
            f"(${2 * r + 1}::VARCHAR, ${2 * r + 2}::INTEGER, {r})" for r in range(rows)
        )
        return (
            "INSERT INTO books (title, author_id) SELECT p0::VARCHAR, p1::INTEGER FROM "
            f"(VALUES {values}) AS imp_sen(p0, p1, sen_counter) ORDER BY sen_counter "
            "RETURNING books.id, books.id AS id__1"
        )

    assert normalize(statement(3)) == (
        "INSERT INTO books (title, author_id) SELECT p0::VARCHAR, p1::INTEGER FROM "
        "(VALUES (?::VARCHAR, ?::INTEGER, ?)) AS imp_sen(p0, p1, sen_counter) "
        "ORDER BY sen_counter RETURNING books.id, books.id AS id__1"
    )
    assert fingerprint(statement(1)) == fingerprint(statement(50))


def test_values_rows_of_another_width_are_kept() -> None:
    sql = "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?)"
    assert normalize(sql) == "INSERT INTO t (a, b) VALUES (?, ?), (?)"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SAVEPOINT sa_savepoint_12", "SAVEPOINT ?"),
        ("savepoint sa_savepoint_1", "SAVEPOINT ?"),
        ('SAVEPOINT "sa_savepoint_1"', "SAVEPOINT ?"),
        ("RELEASE SAVEPOINT sa_savepoint_12", "RELEASE SAVEPOINT ?"),
        ("RELEASE sa_savepoint_12", "RELEASE ?"),
        ("ROLLBACK TO SAVEPOINT sa_savepoint_12", "ROLLBACK TO SAVEPOINT ?"),
        ("ROLLBACK TO sa_savepoint_3", "ROLLBACK TO ?"),
    ],
)
def test_savepoint_names(sql: str, expected: str) -> None:
    assert normalize(sql) == expected


def test_savepoints_of_any_depth_share_a_fingerprint() -> None:
    assert fingerprint("SAVEPOINT sa_savepoint_1") == fingerprint("SAVEPOINT sa_savepoint_27")


def test_case_and_whitespace_insensitive() -> None:
    assert normalize("select * from t where id = 1") == normalize("SELECT *   FROM t WHERE id=2")
    assert normalize("select * from t where id = 1") == "SELECT * FROM t WHERE id = ?"


def test_identifiers_keep_their_case_keywords_are_upper_cased() -> None:
    assert normalize("select Books.Title from Books where Books.Id = 1") == (
        "SELECT Books.Title FROM Books WHERE Books.Id = ?"
    )


def test_quoted_identifiers_are_kept_exactly() -> None:
    sql = 'SELECT "select".id, "Order"."From", "a""b" FROM "select" WHERE "select".x = ?'
    assert normalize(sql) == sql
    assert normalize("SELECT [From].[Order Id] FROM [From]") == (
        "SELECT [From].[Order Id] FROM [From]"
    )
    assert normalize('SELECT "select"') != normalize("SELECT select")


def test_keyword_looking_column_names() -> None:
    # Next to a "." or after AS, a keyword-looking word is a name: its case is kept.
    assert normalize("select t.order, t . select from t as end") == (
        "SELECT t.order, t.select FROM t AS end"
    )


def test_layout_of_parentheses_commas_and_calls() -> None:
    assert normalize("select count( * ) , lower ( t.name ) from t") == (
        "SELECT count(*), lower(t.name) FROM t"
    )
    assert normalize("insert into s.t(a,b) values(1,2)") == "INSERT INTO s.t (a, b) VALUES (?, ?)"
    assert normalize("SELECT a FROM t UNION ALL (SELECT b FROM u)") == (
        "SELECT a FROM t UNION ALL (SELECT b FROM u)"
    )


def test_postgresql_subscripts_and_arrays() -> None:
    assert normalize("SELECT a[1], ARRAY[1, 2], (x)[2:3] FROM t") == (
        "SELECT a[?], ARRAY[?, ?], (x)[? : ?] FROM t"
    )


def test_cte_statement() -> None:
    sql = (
        "WITH RECURSIVE anon_1(n) AS (SELECT 1 UNION ALL SELECT anon_1.n + 1 FROM anon_1 "
        "WHERE anon_1.n < 10) SELECT anon_1.n FROM anon_1"
    )
    assert normalize(sql) == (
        "WITH RECURSIVE anon_1(n) AS (SELECT ? UNION ALL SELECT anon_1.n + ? FROM anon_1 "
        "WHERE anon_1.n < ?) SELECT anon_1.n FROM anon_1"
    )


@pytest.mark.parametrize(
    "garbage",
    ["", " ", "'", '"', "`", "[", "$", "$$", "/*", "--", "\x00", "\x00\x00SELECT", ";", "é∂ƒ"],
)
def test_odd_inputs(garbage: str) -> None:
    out = normalize(garbage)
    assert isinstance(out, str)
    assert normalize(out) == out


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # Unbalanced brackets inside a list: not collapsed (that would add or drop a bracket).
        ("SELECT 1 WHERE a IN((0", "SELECT ? WHERE a IN ((?"),
        ("SELECT 1 WHERE a = ANY((1", "SELECT ? WHERE a = ANY((?"),
        ("SELECT 1 WHERE a IN (1]", "SELECT ? WHERE a IN (?]"),
        ("SELECT 1 WHERE a IN ((0)", "SELECT ? WHERE a IN ((?))"),
    ],
)
def test_unbalanced_lists(sql: str, expected: str) -> None:
    assert fingerprint_module._normalize(sql) == expected
    assert normalize(expected) == expected


def test_huge_input_is_truncated_and_fast() -> None:
    huge = "SELECT " + ", ".join(f"t.c{i}" for i in range(200_000)) + " FROM t"
    assert len(huge) > 1_000_000
    started = time.perf_counter()
    out = normalize(huge)
    elapsed = time.perf_counter() - started
    assert out.startswith("SELECT t.c0, t.c1, ")
    assert len(out) <= MAX_INPUT_CHARS + 100
    assert elapsed < 2.0
    assert HEX16.fullmatch(fingerprint(huge))
    assert operation(huge) == "SELECT"
    assert len(shorten(huge)) <= 120


def test_truncated_in_list_still_collapses() -> None:
    params = ", ".join(f"${i}::INTEGER" for i in range(1, 20_000))
    huge = f"SELECT t.id FROM t WHERE t.id IN ({params})"
    assert len(huge) > MAX_INPUT_CHARS
    assert normalize(huge) == "SELECT t.id FROM t WHERE t.id IN (?::INTEGER)"


def test_truncated_values_drops_the_cut_row() -> None:
    rows = ", ".join(["(?, ?, ?)"] * 10_000)
    huge = f"INSERT INTO t (a, b, c) VALUES {rows}"
    assert len(huge) > MAX_INPUT_CHARS
    assert normalize(huge) == "INSERT INTO t (a, b, c) VALUES (?, ?, ?)"


# -------------------------------------------------------------------------------------------
# fingerprint
# -------------------------------------------------------------------------------------------

PINNED_STATEMENT = (
    "SELECT books.id, books.title, books.author_id \nFROM books \n"
    "WHERE books.author_id IN (__[POSTCOMPILE_author_id_1]) AND books.title = ? \n"
    "ORDER BY books.title \n LIMIT ? OFFSET ?"
)
# Pinned on purpose: a change to the normalization rules that changes fingerprints must be a
# deliberate one (stored baselines and dashboards key on them). Update it only then.
PINNED_FINGERPRINT = "adace3fa54a29e43"


def test_fingerprint_is_pinned() -> None:
    assert fingerprint(PINNED_STATEMENT) == PINNED_FINGERPRINT


def test_fingerprint_is_16_lowercase_hex() -> None:
    for sql in ["", "SELECT 1", PINNED_STATEMENT, "\x00'", "é" * 1000]:
        assert HEX16.fullmatch(fingerprint(sql))


def test_fingerprint_is_blake2b_of_the_normalized_text() -> None:
    import hashlib

    expected = hashlib.blake2b(normalize(PINNED_STATEMENT).encode(), digest_size=8).hexdigest()
    assert fingerprint(PINNED_STATEMENT) == expected


def test_fingerprint_groups_drivers_and_values() -> None:
    sqlite = "SELECT books.id FROM books WHERE books.id IN (?, ?) AND books.title = ?"
    psycopg = (
        "SELECT books.id FROM books WHERE books.id IN (%(id_1_1)s, %(id_1_2)s, %(id_1_3)s) "
        "AND books.title = %(title_1)s"
    )
    mysql = "SELECT books.id FROM books WHERE books.id IN (%s) AND books.title = %s"
    literal = "select books.id from books where books.id in (1, 2) and books.title = 'x'"
    assert len({fingerprint(s) for s in (sqlite, psycopg, mysql, literal)}) == 1
    assert fingerprint(sqlite) != fingerprint(sqlite.replace("books.title", "books.isbn"))


def test_surrogates_do_not_break_the_fingerprint() -> None:
    assert HEX16.fullmatch(fingerprint("SELECT '\udcff' FROM \ud800"))


# -------------------------------------------------------------------------------------------
# operation
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1", "SELECT"),
        ("  select 1", "SELECT"),
        ("/* sqlcommenter='x' */ -- c\n SELECT 1", "SELECT"),
        ("(SELECT 1) UNION (SELECT 2)", "SELECT"),
        ("INSERT INTO t (a) VALUES (?)", "INSERT"),
        ("update t set a = 1", "UPDATE"),
        ("DELETE FROM t", "DELETE"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "SELECT"),
        (
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r",
            "SELECT",
        ),
        ("WITH a AS (SELECT 1), b AS (SELECT 2) INSERT INTO t SELECT * FROM a, b", "INSERT"),
        ("WITH x AS (SELECT id FROM t) UPDATE u SET a = 1 FROM x", "UPDATE"),
        ("WITH x AS MATERIALIZED (SELECT 1) DELETE FROM t USING x", "DELETE"),
        ("WITH moved AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM moved", "INSERT"),
        ("WITH x AS (SELECT 1)", "OTHER"),
        ('"select"', "OTHER"),
        ("BEGIN", "OTHER"),
        ("SAVEPOINT sa_savepoint_1", "OTHER"),
        ("EXPLAIN SELECT 1", "OTHER"),
        ("CREATE TABLE t (a INT)", "OTHER"),
        ("", "OTHER"),
        ("'SELECT'", "OTHER"),
        ("-- SELECT", "OTHER"),
    ],
)
def test_operation(sql: str, expected: str) -> None:
    assert operation(sql) == expected


# -------------------------------------------------------------------------------------------
# is_transaction_control
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "BEGIN",
        "begin",
        "BEGIN TRANSACTION",
        "BEGIN IMMEDIATE",
        "START TRANSACTION",
        "start  transaction read only",
        "COMMIT",
        "commit;",
        "END",
        "ROLLBACK",
        "ROLLBACK TO SAVEPOINT sa_savepoint_1",
        "SAVEPOINT sa_savepoint_1",
        "RELEASE SAVEPOINT sa_savepoint_1",
        "RELEASE sa_savepoint_1",
        "/* sqlcommenter */ COMMIT",
        "-- comment\n  Rollback",
    ],
)
def test_transaction_control(sql: str) -> None:
    assert is_transaction_control(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "",
        "SELECT 1",
        "START",
        "START SLAVE",
        "COMMITTED",
        "UPDATE t SET savepoint = 1",
        "'COMMIT'",
        '"commit"',
        "select 'BEGIN'",
        "/* COMMIT */ SELECT 1",
    ],
)
def test_not_transaction_control(sql: str) -> None:
    assert not is_transaction_control(sql)


# -------------------------------------------------------------------------------------------
# shorten
# -------------------------------------------------------------------------------------------

LONG_SELECT = (
    "SELECT books.id, books.title, books.isbn, books.published_at, books.author_id, "
    "books.created_at, books.updated_at \nFROM books \nWHERE books.author_id = ?"
)


def test_shorten_short_statement_is_one_line() -> None:
    assert shorten("SELECT 1\n  FROM t -- why\n WHERE a = 'x'") == "SELECT 1 FROM t WHERE a = 'x'"


def test_shorten_collapses_the_column_list() -> None:
    assert shorten(LONG_SELECT, 80) == "SELECT books.id, ... FROM books WHERE books.author_id = ?"
    assert shorten(LONG_SELECT, 200) == " ".join(LONG_SELECT.split())


def test_shorten_column_list_with_nested_parentheses() -> None:
    sql = "SELECT count(t.a, t.b) AS n, coalesce(t.c, (SELECT 1 FROM u)) AS m FROM t WHERE x"
    assert shorten(sql, 60) == "SELECT count(t.a, t.b) AS n, ... FROM t WHERE x"


def test_shorten_cuts_with_an_ellipsis() -> None:
    sql = "UPDATE books SET " + ", ".join(f"c{i} = ?" for i in range(100))
    out = shorten(sql, 50)
    assert len(out) <= 50
    assert out.endswith("...")
    assert out.startswith("UPDATE books SET c0 = ?")


@pytest.mark.parametrize("width", [-1, 0, 1, 2, 3, 4, 10])
def test_shorten_tiny_widths(width: int) -> None:
    out = shorten(LONG_SELECT, width)
    assert len(out) <= max(width, 0)


# -------------------------------------------------------------------------------------------
# shape_of and its cache
# -------------------------------------------------------------------------------------------


@pytest.fixture
def empty_shape_cache() -> Iterator[None]:
    shape_of.cache_clear()
    yield
    shape_of.cache_clear()


@pytest.mark.usefixtures("empty_shape_cache")
def test_shape_of() -> None:
    shape = shape_of("select * from t where id = 1")
    assert shape == Shape(
        sql="SELECT * FROM t WHERE id = ?",
        fingerprint=fingerprint("select * from t where id = 1"),
        operation="SELECT",
        is_control=False,
    )
    assert shape_of("SAVEPOINT sa_savepoint_3").is_control
    with pytest.raises(AttributeError):
        shape.sql = "x"  # type: ignore[misc]


@pytest.mark.usefixtures("empty_shape_cache")
def test_shape_of_is_cached() -> None:
    assert shape_cache_stats() == {
        "size": 0,
        "max_size": SHAPE_CACHE_SIZE,
        "hits": 0,
        "misses": 0,
        "evicted": 0,
    }
    first = shape_of("SELECT 1")
    assert shape_of("SELECT 1") is first
    shape_of("SELECT 2")
    assert shape_cache_stats() == {
        "size": 2,
        "max_size": SHAPE_CACHE_SIZE,
        "hits": 1,
        "misses": 2,
        "evicted": 0,
    }


@pytest.mark.usefixtures("empty_shape_cache")
def test_shape_cache_is_bounded() -> None:
    extra = 25
    for i in range(SHAPE_CACHE_SIZE + extra):
        shape_of(f"SELECT t.c{i} FROM t")
    stats = shape_cache_stats()
    assert stats["size"] == stats["max_size"] == SHAPE_CACHE_SIZE
    assert stats["misses"] == SHAPE_CACHE_SIZE + extra
    assert stats["evicted"] == extra
    shape_of(f"SELECT t.c{SHAPE_CACHE_SIZE + extra - 1} FROM t")  # the newest is still there
    assert shape_cache_stats()["hits"] == 1


# -------------------------------------------------------------------------------------------
# Properties
# -------------------------------------------------------------------------------------------

# Pieces of SQL, including every construct the tokenizer treats specially and the odd ones
# (lone quotes, unterminated comments, keyword-looking names), glued with or without spaces.
FRAGMENTS = [
    *("SELECT", "select", "FROM", "WHERE", "AND", "IN", "in", "NOT", "ANY", "ALL", "SOME"),
    *("VALUES", "values", "AS", "as", "TRUE", "false", "NULL", "ARRAY", "array", "SAVEPOINT"),
    *("RELEASE", "ROLLBACK", "TO", "INTO", "TABLE", "WITH", "UNION", "END", "BEGIN", "COMMIT"),
    *("count", "books", "books.id", "t", "x", "Books", "key", "e", "E", "N", "u", "U", "__"),
    *('"select"', '"Order"', "`order`", "[From]", '"a""b"', "t.*", "s.t.c", '"q".x'),
    *("(", ")", "[", "]", ",", ".", ";", "::", ":", "=", "<>", "<=", "-", "+", "*", "/"),
    *("%", "%%", "||", "->>", "#", "!", "|", "@", "&", "$", "{", "}", "\\"),
    *("?", "$1", "$2", "%s", "%(name)s", ":name", "__[POSTCOMPILE_ids]", "(?, ?)"),
    *("1", "-1", "1.5", ".5", "1e10", "0xFF", "'x'", "'it''s'", "E'\\''", "$$a$$", "$t$b$t$"),
    *("-- c\n", "/* c */", "/*!1 x*/", "'", '"', "`", "/*", "*/", "--", "$$", "\x00", "é"),
    *("\u017felect", "\u0131n", "\u0301", "\u200b", "\u00b2"),  # upper(): SELECT, IN
]
SEPARATORS = ["", " ", "  ", "\n", "\t"]

sql_like = st.lists(
    st.tuples(st.sampled_from(FRAGMENTS), st.sampled_from(SEPARATORS)), max_size=40
).map(lambda parts: "".join(fragment + separator for fragment, separator in parts))

# st.text() has every code point but surrogates (which the second one allows) and NUL.
any_text = st.text() | st.text(alphabet=st.characters(exclude_categories=())) | sql_like


@settings(max_examples=200)
@given(any_text, st.integers(min_value=-5, max_value=300))
def test_nothing_raises(text: str, width: int) -> None:
    assert isinstance(normalize(text), str)
    assert HEX16.fullmatch(fingerprint(text))
    assert operation(text) in ("SELECT", "INSERT", "UPDATE", "DELETE", "OTHER")
    assert isinstance(is_transaction_control(text), bool)
    out = shorten(text, width)
    assert len(out) <= max(width, 0)
    assert len(out.splitlines()) <= 1


@settings(max_examples=200)
@given(any_text, st.integers(min_value=-5, max_value=300))
def test_the_fallbacks_are_not_needed(text: str, width: int) -> None:
    # The public functions turn an internal error into a fallback answer; the implementations
    # behind them must not depend on that (it would hide bugs).
    fingerprint_module._normalize(text)
    fingerprint_module._operation(text)
    fingerprint_module._is_transaction_control(text)
    fingerprint_module._shorten(text, width)


@settings(max_examples=200)
@given(st.text())
def test_normalize_is_idempotent_on_any_text(text: str) -> None:
    once = fingerprint_module._normalize(text)
    assert fingerprint_module._normalize(once) == once


@settings(max_examples=300)
@given(sql_like)
def test_normalize_is_idempotent_on_sql_like_text(text: str) -> None:
    once = fingerprint_module._normalize(text)
    assert fingerprint_module._normalize(once) == once


@settings(max_examples=200)
@given(sql_like)
def test_normalized_text_is_one_trimmed_line_outside_quotes(text: str) -> None:
    once = normalize(text)
    assert once == once.strip()
    assert "  " not in re.sub(r"\"[^\"]*\"?|`[^`]*`?|\[[^\]]*\]?", "q", once)


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def escape_string(value: str) -> str:
    return "E'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


TEMPLATE = (
    "SELECT books.id, books.title FROM books WHERE books.title = {s} AND books.pages > {i} "
    "AND books.price < {f} AND books.isbn IN ({s}, {i}, {e}) AND books.note <> {e} LIMIT {i}"
)
TEMPLATE_SHAPE = normalize(TEMPLATE.format(s="?", i="?", f="?", e="?"))


@settings(max_examples=200)
@given(
    s=st.text(),
    i=st.integers(),
    f=st.floats(allow_nan=False, allow_infinity=False),
    e=st.text(),
)
def test_literal_values_do_not_change_the_fingerprint(s: str, i: int, f: float, e: str) -> None:
    sql = TEMPLATE.format(s=sql_string(s), i=i, f=repr(f), e=escape_string(e))
    assert normalize(sql) == TEMPLATE_SHAPE
    assert fingerprint(sql) == fingerprint(TEMPLATE.format(s="?", i="?", f="?", e="?"))


@settings(max_examples=100)
@given(st.text().filter(lambda value: "$q$" not in value))
def test_dollar_quoted_values_do_not_change_the_fingerprint(value: str) -> None:
    assert normalize(f"SELECT f($q${value}$q$, 1)") == "SELECT f(?, ?)"


IN_ITEMS: dict[str, Callable[[int], str]] = {
    "qmark": lambda n: "?",
    "numeric": lambda n: f"${n}",
    "asyncpg": lambda n: f"${n}::INTEGER",
    "format": lambda n: "%s",
    "pyformat": lambda n: f"%(id_1_{n})s",
    "named": lambda n: f":id_{n}",
    "int": lambda n: str(n * 7 - 3),
    "string": lambda n: sql_string(f"v{n}'"),
}


@settings(max_examples=100)
@given(st.sampled_from(sorted(IN_ITEMS)), st.integers(min_value=1, max_value=300))
def test_in_list_length_does_not_change_the_fingerprint(style: str, length: int) -> None:
    item = IN_ITEMS[style]

    def statement(n: int) -> str:
        items = ", ".join(item(k) for k in range(1, n + 1))
        return f"SELECT t.id FROM t WHERE t.id IN ({items}) AND t.a = 1"

    assert fingerprint(statement(length)) == fingerprint(statement(1))


@settings(max_examples=100)
@given(st.integers(min_value=1, max_value=100), st.sampled_from(["?", "$1", "%s", "1", "'x'"]))
def test_values_row_count_does_not_change_the_fingerprint(rows: int, value: str) -> None:
    row = f"({value}, {value}, DEFAULT)"
    sql = f"INSERT INTO t (a, b, c) VALUES {', '.join([row] * rows)} RETURNING t.id"
    assert normalize(sql) == "INSERT INTO t (a, b, c) VALUES (?, ?, DEFAULT) RETURNING t.id"


@settings(max_examples=100)
@given(st.sampled_from(["BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT x", "RELEASE x"]), sql_like)
def test_transaction_control_ignores_leading_comments_and_case(word: str, tail: str) -> None:
    assert is_transaction_control(f"/* c */ -- c\n {word.lower()} {tail}")
