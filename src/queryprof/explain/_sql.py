"""Reading SQL text: statements (may they be explained, ANALYZEd?), conditions and plans.

One small tokenizer serves three readers: the safety checks on a statement, the columns a
condition filters on (for index hints) and the masking of literals in plan text. It never
raises and is linear: every alternative either fails after a bounded look or runs to its end.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, NamedTuple

_TOKEN_RE: Final = re.compile(
    r"""
      (?P<space>\s+|--[^\n]*|/\*[\s\S]*?(?:\*/|\Z))
    | (?P<string>
          [eE]'(?:[^'\\]|\\[\s\S]|'')*+(?:'|\Z)
        | (?:[nNbBxX]|[uU]&|_[A-Za-z]\w*)?'(?:[^']|'')*+(?:'|\Z)
        | \$(?P<tag>(?:[^\W\d]\w*)?)\$[\s\S]*?(?:\$(?P=tag)\$|\Z))
    | (?P<qident>"(?:[^"]|"")*+(?:"|\Z)|`(?:[^`]|``)*+(?:`|\Z))
    | (?P<param>\$\d+|%\([^()\s]{1,128}\)s|%s|\?|(?<!:):[^\W\d]\w*)
    | (?P<word>[^\W\d][\w$]*)
    | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<op>::|<=|>=|<>|!=|[\s\S])
    """,
    re.VERBOSE,
)

MAX_CHARS: Final = 64 * 1024


class Token(NamedTuple):
    kind: str  # string, qident, param, word, number, op
    text: str
    start: int
    end: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else ""


def tokens(sql: str) -> list[Token]:
    """The significant tokens of ``sql`` (comments and whitespace skipped)."""
    found = []
    for match in _TOKEN_RE.finditer(sql[:MAX_CHARS]):
        kind = match.lastgroup or "op"  # the outer group: "tag" closes before "string"
        if kind != "space":
            found.append(Token(kind, match.group(), match.start(), match.end()))
    return found


# -- statements ---------------------------------------------------------------------------

EXPLAINABLE: Final = frozenset(
    {"SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "VALUES", "TABLE", "MERGE", "REPLACE"}
)
# Words that make a SELECT something other than a plain read: writes (also inside a CTE),
# row locks (FOR UPDATE / FOR SHARE / LOCK IN SHARE MODE), SELECT ... INTO, and statements.
_NOT_READ_ONLY: Final = frozenset(
    {
        *("INSERT", "UPDATE", "DELETE", "MERGE", "INTO", "LOCK", "SHARE", "CALL", "COPY"),
        *("CREATE", "DROP", "ALTER", "TRUNCATE", "GRANT", "REVOKE", "EXECUTE", "EXEC"),
        *("SET", "HANDLER", "LOAD", "OUTFILE", "DUMPFILE", "PREPARE", "DEALLOCATE"),
    }
)
# Functions with effects a rolled-back read-only transaction does not undo (session locks,
# other backends, files, replication, the server's configuration).
_SIDE_EFFECT_FUNCTIONS: Final = (
    *("nextval", "setval", "set_config", "pg_advisory", "pg_try_advisory", "pg_terminate"),
    *("pg_cancel", "pg_notify", "pg_reload", "pg_rotate", "pg_switch", "pg_create"),
    *("pg_drop", "pg_replication", "pg_logical", "pg_stat_reset", "pg_file", "pg_read"),
    *("pg_promote", "pg_import", "lo_", "dblink", "get_lock", "release_lock"),
    *("release_all_locks", "load_file", "sys_", "master_pos_wait", "source_pos_wait"),
)


def _first_word(toks: Sequence[Token]) -> str:
    for t in toks:
        if t.text != "(":
            return t.upper
    return ""


def _several_statements(toks: Sequence[Token]) -> bool:
    end = len(toks)
    while end and toks[end - 1].text == ";":
        end -= 1
    return any(t.text == ";" for t in toks[:end])


def not_explainable(sql: str) -> str | None:
    """Why ``sql`` cannot be explained safely, or None when it can."""
    try:
        toks = tokens(sql)
    except Exception:
        return "the statement could not be read"
    if not toks:
        return "the statement is empty"
    if _several_statements(toks):
        return "the text holds several statements; only one at a time is explained"
    verb = _first_word(toks)
    if verb not in EXPLAINABLE:
        return f"only SELECT, INSERT, UPDATE and DELETE statements are explained, not {verb or '?'}"
    return None


def read_only_select(sql: str) -> bool:
    """Whether ``sql`` is a plain read, safe to run again under EXPLAIN ANALYZE.

    Only a SELECT (or WITH ... SELECT) with no write anywhere (a data-modifying CTE), no row
    lock (FOR UPDATE/SHARE), no INTO, no second statement and no function known to have
    effects outside the transaction. Anything else, recognised or not, is not.
    """
    try:
        toks = tokens(sql)
        if not toks or _first_word(toks) not in ("SELECT", "WITH") or _several_statements(toks):
            return False
        for i, t in enumerate(toks):
            if t.kind != "word":
                continue
            if t.upper in _NOT_READ_ONLY:
                return False
            following = toks[i + 1].text if i + 1 < len(toks) else ""
            if following == "(" and t.text.lower().startswith(_SIDE_EFFECT_FUNCTIONS):
                return False
        return True
    except Exception:
        return False


# -- conditions -----------------------------------------------------------------------------

_CONDITION_WORDS: Final = frozenset(
    {
        *("AND", "OR", "NOT", "IS", "NULL", "TRUE", "FALSE", "UNKNOWN", "IN", "LIKE", "ILIKE"),
        *("BETWEEN", "ANY", "ALL", "SOME", "ARRAY", "CASE", "WHEN", "THEN", "ELSE", "END"),
        *("ESCAPE", "COLLATE", "EXISTS", "SELECT", "FROM", "WHERE", "AS", "ON", "DISTINCT"),
        *("INTERVAL", "SIMILAR", "TO", "DIV", "MOD", "REGEXP", "RLIKE", "BINARY", "USING"),
        # PostgreSQL plan vocabulary, MariaDB's "multiple equal(...)"
        *("SUBPLAN", "INITPLAN", "HASHED", "ALTERNATIVES", "RETURNS", "MULTIPLE", "EQUAL"),
    }
)
_EQUALITY: Final = frozenset({"=", "IN"})
_COMPARISON: Final = frozenset({"=", "<", ">", "<=", ">=", "<>", "!=", "IN", "LIKE", "ILIKE"})


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] in '"`' and text[-1] == text[0]:
        return text[1:-1].replace(text[0] * 2, text[0])
    return text


def _names(toks: Sequence[Token]) -> Iterator[tuple[int, int, list[str]]]:
    """(first index, index after, parts) of each dotted name: ``a.b.c``, ```db`.`t`.`c```."""
    i = 0
    while i < len(toks):
        if toks[i].kind not in ("word", "qident"):
            i += 1
            continue
        start, parts = i, [_unquote(toks[i].text)]
        while (
            i + 2 < len(toks) and toks[i + 1].text == "." and toks[i + 2].kind in ("word", "qident")
        ):
            parts.append(_unquote(toks[i + 2].text))
            i += 2
        yield start, i + 1, parts
        i += 1


def condition_columns(condition: str, tables: Sequence[str], *, unqualified: bool) -> list[str]:
    """The columns of ``tables`` (names or aliases) that ``condition`` filters on.

    Equality and IN comparisons first (they lead a useful index), then the others, each once,
    in the order written. Function names, type names after ``::``, keywords and columns only
    tested for NULL are left out; unqualified columns count only when ``unqualified``.
    """
    wanted = {t.lower() for t in tables}
    toks = tokens(condition)
    equal: list[str] = []
    other: list[str] = []
    for start, end, parts in _names(toks):
        before = toks[start - 1].text if start else ""
        after = toks[end] if end < len(toks) else None
        if before == "::" or (start >= 2 and toks[start - 2].upper == "COLLATE"):
            continue  # a type name (or the collation after COLLATE)
        if after is not None and (after.text == "(" or after.kind == "string"):
            continue  # a function call, or a typed literal such as DATE '2024-01-01'
        if len(parts) == 1 and toks[start].kind == "word" and parts[0].upper() in _CONDITION_WORDS:
            continue
        if len(parts) == 1 and not unqualified:
            continue
        if len(parts) > 1 and parts[-2].lower() not in wanted:
            continue
        operator = _operator_after(toks, end)
        if operator is None and before.upper() in _COMPARISON:
            operator = before.upper()  # written the other way round: "42 = t.col"
        if operator is None or operator in ("IS", "<>", "!="):
            continue  # not compared, only tested for NULL, or "not equal": no index helps
        column = parts[-1]
        if column not in equal and column not in other:
            (equal if operator in _EQUALITY else other).append(column)
    return equal + other


def _operator_after(toks: Sequence[Token], i: int) -> str | None:
    """The comparison a name ending before ``toks[i]`` takes part in (``)``, ``::type`` and
    NOT are skipped): ``=``, ``IN``, ``<``, ``LIKE``, ``BETWEEN``, ``IS``... or None."""
    while i < len(toks):
        t = toks[i]
        if t.text == "::":
            i += 2
            while i < len(toks) and toks[i].kind == "word" and toks[i].upper not in ("AND", "OR"):
                i += 1
        elif t.text == ")" or t.upper == "NOT":
            i += 1
        else:
            text = t.upper or t.text
            return text if text in _COMPARISON or text in ("IS", "BETWEEN") else None
    return None


# -- statement text: tables, WHERE/ON, OFFSET -----------------------------------------------

_CLAUSE_END: Final = frozenset(
    {
        *("WHERE", "GROUP", "ORDER", "LIMIT", "OFFSET", "HAVING", "WINDOW", "UNION"),
        *("INTERSECT", "EXCEPT", "RETURNING", "FETCH", "FOR", "SET", "VALUES", "ON"),
        *("JOIN", "INNER", "LEFT", "RIGHT", "FULL", "CROSS", "NATURAL", "STRAIGHT_JOIN"),
        *("USING", "LATERAL", "OUTER"),
    }
)


def tables_of(sql: str) -> dict[str, str]:
    """``{alias or name: table}`` for the tables after FROM, JOIN, UPDATE and INTO."""
    toks = tokens(sql)
    found: dict[str, str] = {}
    i = 0
    while i < len(toks):
        word = toks[i].upper
        if word in ("FROM", "JOIN", "UPDATE", "INTO") or (
            toks[i].text == "," and _in_from_list(toks, i)
        ):
            named = next(_names(toks[i + 1 :]), None)
            if named is not None and named[0] == 0:
                end, parts = i + 1 + named[1], named[2]
                table = parts[-1]
                alias = table
                if end < len(toks) and toks[end].upper == "AS":
                    end += 1
                if (
                    end < len(toks)
                    and toks[end].kind in ("word", "qident")
                    and toks[end].upper not in _CLAUSE_END
                ):
                    alias = _unquote(toks[end].text)
                if table.upper() not in ("SELECT", "LATERAL"):
                    found.setdefault(alias, table)
                    found.setdefault(table, table)
        i += 1
    return found


def cte_names(sql: str) -> set[str]:
    """The names a WITH clause of ``sql`` defines (scans of them are not table scans)."""
    toks = tokens(sql)
    names = set()
    for i in range(1, len(toks) - 1):
        name, before, following = toks[i], toks[i - 1], toks[i + 1]
        defines = following.upper == "AS" or following.text == "("
        listed = before.upper in ("WITH", "RECURSIVE") or before.text == ","
        if defines and listed and name.kind in ("word", "qident") and _in_with(toks, i):
            names.add(_unquote(name.text))
    return names


def _in_with(toks: Sequence[Token], i: int) -> bool:
    """Whether ``toks[i]`` is at the top level of a WITH clause (not in a SELECT list)."""
    depth = 0
    for j in range(i - 1, -1, -1):
        text = toks[j].text
        if text == ")":
            depth += 1
        elif text == "(":
            depth -= 1
        elif depth == 0 and toks[j].upper in ("WITH", "SELECT"):
            return toks[j].upper == "WITH"
    return False


def _in_from_list(toks: Sequence[Token], comma: int) -> bool:
    depth = 0
    for j in range(comma - 1, -1, -1):
        text = toks[j].text
        if text == ")":
            depth += 1
        elif text == "(":
            if depth == 0:
                return False
            depth -= 1
        elif depth == 0 and toks[j].upper in ("FROM", "SELECT", "WHERE", "BY", "VALUES"):
            return toks[j].upper == "FROM"
    return False


def filter_text(sql: str, clauses: Sequence[str] = ("WHERE", "ON")) -> str:
    """The conditions of these clauses of ``sql``, joined with AND (SQLite's plan has none)."""
    toks = tokens(sql)
    parts: list[str] = []
    i = 0
    while i < len(toks):
        if toks[i].upper in clauses:
            j, depth = i + 1, 0
            while j < len(toks):
                text = toks[j].text
                depth += (text == "(") - (text == ")")
                if depth < 0 or (depth == 0 and (toks[j].upper in _CLAUSE_END or text == ";")):
                    break
                j += 1
            if j > i + 1:
                parts.append(sql[toks[i + 1].start : toks[j - 1].end])
            i = j
        else:
            i += 1
    return " AND ".join(f"({p})" for p in parts)


def order_key(sql: str) -> str | None:
    """The first column of the outermost ORDER BY, without its qualifier."""
    toks = tokens(sql)
    depth = 0
    for i, t in enumerate(toks):
        depth += (t.text == "(") - (t.text == ")")
        if depth == 0 and t.upper == "BY" and i and toks[i - 1].upper == "ORDER":
            named = next(_names(toks[i + 1 :]), None)
            if named is not None and named[0] == 0:
                return named[2][-1]
            return None
    return None


def offset_of(sql: str, parameters: Any) -> int | None:
    """The OFFSET of ``sql`` (a literal or a bound parameter), or None."""
    try:
        toks = tokens(sql)
        positional = -1
        for i, t in enumerate(toks):
            if t.kind == "param" and t.text in ("?", "%s"):
                positional += 1
            if t.upper == "OFFSET" and i + 1 < len(toks):
                return _value(toks[i + 1], parameters, positional + 1)
            if t.upper == "LIMIT" and i + 2 < len(toks) and toks[i + 2].text == ",":
                return _value(toks[i + 1], parameters, positional + 1)  # MySQL: LIMIT off, n
        return None
    except Exception:
        return None


def _value(token: Token, parameters: Any, position: int) -> int | None:
    value: Any = None
    if token.kind == "number":
        value = token.text
    elif token.kind == "param":
        text = token.text
        if text.startswith("$") and isinstance(parameters, Sequence):
            value = parameters[int(text[1:]) - 1]
        elif text.startswith("%(") and isinstance(parameters, Mapping):
            value = parameters.get(text[2:-2])
        elif text.startswith(":") and isinstance(parameters, Mapping):
            value = parameters.get(text[1:])
        elif isinstance(parameters, Sequence) and not isinstance(parameters, str):
            value = parameters[position]
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
