"""Statement shapes: turn SQL text into a normalized *shape* and a stable *fingerprint*.

Two statements that differ only in their literal values, placeholder style, comments, whitespace,
keyword case or the length of an ``IN (...)`` list / multi-row ``VALUES`` get the same shape, so
the detectors can group "the same query" however often and with whatever values it runs.

Everything here is pure, standard library only, and **never raises**: the input is whatever text
a driver was about to execute, and a profiler must not break the application it profiles. On an
internal error each function falls back to something sane (for :func:`normalize`, a copy of the
input with its whitespace collapsed).

Cost bound: only the first :data:`MAX_INPUT_CHARS` (64 KiB) characters of a statement are
looked at. Longer text is truncated before it is tokenized, so a 1 MB ``INSERT`` with inlined
data costs the same as a 64 KiB one; two statements that only differ after that prefix share a
shape. The tokenizer is a single regular expression scanned once (every alternative is linear),
followed by a few linear passes over the token list.

Normalization rules (the output of :func:`normalize`):

* Comments are dropped: ``-- ...`` to the end of the line and ``/* ... */`` (sqlcommenter's
  ``/*key='v'*/``, MySQL's ``/*! ... */``). An unterminated comment runs to the end. Block
  comments do not nest and ``#`` is not a comment (it is an operator in PostgreSQL).
* Literals become ``?``: strings ``'...'`` (``''`` escape, ``E'...'`` with backslash escapes,
  ``N''``/``X''``/``B''``/``U&''`` prefixes), dollar-quoted ``$$...$$``/``$tag$...$tag$``,
  numbers (integers, decimals, exponents, ``0x..``; a unary minus or plus is folded in),
  ``TRUE`` and ``FALSE``. ``NULL`` stays a keyword (``IS NULL`` is structure, not a value).
  Plain strings follow the SQL standard: a backslash does not escape a quote.
* Every placeholder becomes ``?``: ``?``, ``$1``, ``%s``, ``%(name)s``, ``:name`` (but not the
  ``::type`` cast, which is kept, e.g. ``?::INTEGER``) and SQLAlchemy's expanding marker
  ``__[POSTCOMPILE_name]``. ``%%`` (the escaped modulo of format-style drivers) becomes ``%``.
* ``IN (...)`` lists whose items are all placeholders (optionally cast, or tuples of them)
  collapse to their first item: ``IN (?, ?, ?)`` -> ``IN (?)``,
  ``IN ($1::INTEGER, $2::INTEGER)`` -> ``IN (?::INTEGER)``. ``= ANY(...)``/``SOME``/``ALL``
  over a placeholder or an ``ARRAY[...]`` of them collapses to ``= ANY(?)``.
* Multi-row ``VALUES (...), (...), ...`` keeps only its first row while the following rows have
  the same number of columns (a trailing row cut off by truncation is dropped too).
* Savepoint names become ``?``: ``SAVEPOINT ?``, ``RELEASE [SAVEPOINT] ?``,
  ``ROLLBACK TO [SAVEPOINT] ?``.
* Case: words in a fixed set of SQL keywords are upper-cased; every other identifier is kept
  exactly as written (so ``Books`` and ``books`` stay different shapes), and so are quoted
  identifiers (``"select"``, ```order```, ``[From]``). A keyword-looking word next to a ``.``
  (``t.key``) or right after ``AS`` is an identifier and keeps its case.
* Layout: tokens are separated by one space, except none inside parentheses/brackets, before
  ``,``/``.``/``;``, around ``.`` and ``::``, and between a function name and its ``(``
  (``count(*)``, ``ANY(?)``; but ``INSERT INTO t (a)`` and ``IN (?)`` keep the space).
  Trailing semicolons are dropped.

``normalize`` is idempotent: normalizing a normalized statement returns it unchanged (for
statements whose normalized form is within the size limit).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "MAX_INPUT_CHARS",
    "SHAPE_CACHE_SIZE",
    "Operation",
    "Shape",
    "fingerprint",
    "is_transaction_control",
    "normalize",
    "operation",
    "shape_cache_stats",
    "shape_of",
    "shorten",
]

Operation = Literal["SELECT", "INSERT", "UPDATE", "DELETE", "OTHER"]

MAX_INPUT_CHARS: Final = 64 * 1024
"""Only this many leading characters of a statement are tokenized (bounds the cost)."""

SHAPE_CACHE_SIZE: Final = 4096
"""Entries kept by the :func:`shape_of` LRU cache."""

# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------

# Token kinds. Literal kinds (_STRING, _NUMBER) and _PARAM all become "?" when normalizing, but
# _NUMBER is kept apart so a preceding unary minus can be folded into it.
_WS: Final = 0
_COMMENT: Final = 1
_STRING: Final = 2
_NUMBER: Final = 3
_PARAM: Final = 4
_QIDENT: Final = 5
_WORD: Final = 6
_CAST: Final = 7
_OP: Final = 8
_PUNCT: Final = 9
_LBRACKET: Final = 10  # "[": a quoted identifier or a subscript, decided by what precedes it
_OTHER: Final = 11

# One alternative per token kind, tried in order at each position. Every alternative either
# fails after a bounded look or matches through to its end (unterminated strings, comments and
# quoted identifiers run to the end of the text), so a scan is linear in the text length.
_TOKEN_RE: Final = re.compile(
    r"""
    (?P<ws>[\s\x00-\x08\x0e-\x1b\x7f\u200b-\u200d\u2060\ufeff]+)
  | (?P<comment>--[^\n\r]*|/\*[\s\S]*?(?:\*/|\Z))
    # E'...' is the PostgreSQL escape string, the only one where a backslash escapes a quote.
  | (?P<estring>[eE]'(?:[^'\\]+|\\[\s\S]|'')*+(?:'|\\?\Z))
  | (?P<string>(?:[nNbBxX]|[uU]&)?'(?:[^']+|'')*+(?:'|\Z))
    # $$...$$ or $tag$...$tag$; the tag group always participates (maybe empty) so the
    # back-reference works for $$ too. $1 is not a dollar quote (a tag cannot start with a digit).
  | (?P<dollar>\$(?P<tag>(?:[^\W\d]\w*)?)\$[\s\S]*?(?:\$(?P=tag)\$|\Z))
  | (?P<qident>"(?:[^"]+|"")*+(?:"|\Z)|`(?:[^`]+|``)*+(?:`|\Z))
    # SQLAlchemy's "expanding IN" marker, before <word> which would take the leading "__".
  | (?P<postcompile>__\[POSTCOMPILE_[^\]]*(?:\]|\Z))
    # "::" before <param> so a PostgreSQL cast is never read as a ":name" placeholder.
  | (?P<cast>::)
  | (?P<param>\$\d+|%\([^()\s]{1,128}\)s|%s|\?|:[^\W\d][\w$]*)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<word>[^\W\d][\w$]*)
  | (?P<lbracket>\[)
  | (?P<op>%%|->>?|\#>>?|<=>|<[=>@<]|>[=>]|!=|==|\|\||@>|&&|!?~\*?|[-+*/<>=~!@\#%^&|])
  | (?P<punct>[(),.;\]{}])
  | (?P<other>[\s\S])
    """,
    re.VERBOSE,
)

# A bracket-quoted identifier (SQLite, SQL Server): "[" up to the next "]", or to the end.
_BRACKET_RE: Final = re.compile(r"\[[^\]]*+(?:\]|\Z)")

_GROUP_KINDS: Final = {
    "ws": _WS,
    "comment": _COMMENT,
    "estring": _STRING,
    "string": _STRING,
    "dollar": _STRING,
    "qident": _QIDENT,
    "postcompile": _PARAM,
    "cast": _CAST,
    "param": _PARAM,
    "number": _NUMBER,
    "word": _WORD,
    "lbracket": _LBRACKET,
    "op": _OP,
    "punct": _PUNCT,
    "other": _OTHER,
}


def _kind_table() -> tuple[int, ...]:
    # Match.lastindex is the outermost group of the alternative that matched (the inner "tag"
    # group closes first), so a tuple indexed by it maps a match to its kind without a dict.
    table = [_OTHER] * (_TOKEN_RE.groups + 1)
    for name, index in _TOKEN_RE.groupindex.items():
        if name in _GROUP_KINDS:
            table[index] = _GROUP_KINDS[name]
    return tuple(table)


_KIND_BY_GROUP: Final = _kind_table()

# Words upper-cased by normalize. Deliberately mostly reserved words: column names such as
# "name", "key", "type", "value" or "date" must not be touched.
_KEYWORDS: Final = frozenset(
    """
    ALL ALTER AND ANY ARRAY AS ASC BEGIN BETWEEN BY CASE CAST CHECK COLLATE COMMIT CONFLICT
    CONSTRAINT CREATE CROSS CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER DEFAULT
    DELETE DESC DISTINCT DO DROP DUPLICATE ELSE END ESCAPE EXCEPT EXISTS EXPLAIN FALSE FETCH
    FILTER FIRST FOR FOREIGN FROM FULL GROUP HAVING IF ILIKE IN INDEX INNER INSERT INTERSECT
    INTERVAL INTO IS JOIN LAST LATERAL LEFT LIKE LIMIT LOCALTIME LOCALTIMESTAMP LOCKED
    MATERIALIZED NATURAL NEXT NOT NOTHING NOWAIT NULL NULLS OF OFFSET ON ONLY OR ORDER OUTER
    OVER PARTITION PRIMARY RECURSIVE REFERENCES RELEASE RETURNING RIGHT ROLLBACK ROW ROWS
    SAVEPOINT SELECT SET SHARE SIMILAR SKIP SOME START TABLE THEN TO TRANSACTION TRUE TRUNCATE
    UNION UNIQUE UPDATE USING VALUES VIEW WHEN WHERE WINDOW WITH WORK
    """.split()
)
# Keywords that end a value (so "NULL - 1" is a subtraction and "TRUE[1]" a subscript).
_VALUE_KEYWORDS: Final = frozenset(
    """
    NULL TRUE FALSE END ARRAY CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER
    LOCALTIME LOCALTIMESTAMP
    """.split()
)
# Keywords written like functions: no space before their "(".
_FUNCTION_KEYWORDS: Final = frozenset({"ANY", "SOME", "CAST", "ARRAY"})
# "INTO t (a, b)": a name after these is a table, not a function call, so "(" keeps its space.
_TABLE_KEYWORDS: Final = frozenset({"INTO", "TABLE", "REFERENCES", "VIEW", "EXISTS"})

_DOT: Final = (_PUNCT, ".")
_OPEN: Final = (_PUNCT, "(")
_CLOSE: Final = (_PUNCT, ")")
_COMMA: Final = (_PUNCT, ",")
_SEMICOLON: Final = (_PUNCT, ";")
_QMARK: Final = (_PARAM, "?")

Token = tuple[int, str]


def _ends_value(kind: int, text: str) -> bool:
    """Whether a token can end an operand: then "-" after it is binary and "[" a subscript."""
    if kind in (_STRING, _NUMBER, _PARAM, _QIDENT):
        return True
    if kind == _WORD:
        upper = text.upper()
        return upper not in _KEYWORDS or upper in _VALUE_KEYWORDS
    return kind == _PUNCT and text in (")", "]")


def _scan(text: str) -> Iterator[Token]:
    """Yield (kind, text) for every token, whitespace and comments included."""
    pos = 0
    after_value = False
    while pos < len(text):
        for match in _TOKEN_RE.finditer(text, pos):
            kind = _KIND_BY_GROUP[match.lastindex or 0]
            token = match.group()
            if kind == _LBRACKET:
                if not after_value:
                    # "[name]" is a quoted identifier; it may hold anything up to "]", so the
                    # regular scan restarts after it.
                    bracket = _BRACKET_RE.match(text, match.start())
                    end = bracket.end() if bracket else match.end()
                    yield _QIDENT, text[match.start() : end]
                    after_value = True
                    pos = end
                    break
                kind = _PUNCT  # "x[1]", "ARRAY[...]": a subscript, tokenized normally
            yield kind, token
            if kind > _COMMENT:
                after_value = _ends_value(kind, token)
        else:
            return


def _significant(text: str) -> Iterator[Token]:
    for kind, token in _scan(text):
        if kind > _COMMENT:
            yield kind, token


# --------------------------------------------------------------------------------------------
# normalize
# --------------------------------------------------------------------------------------------


def _tokens(text: str) -> list[Token]:
    """Significant tokens with literals and placeholders replaced by "?"."""
    tokens: list[Token] = []
    append = tokens.append
    for kind, token in _scan(text):
        if kind <= _COMMENT:
            continue
        if kind == _NUMBER:
            # Fold a unary sign into the number: "= -1" -> "= ?", but "a - 1" -> "a - ?".
            if (
                tokens
                and tokens[-1][0] == _OP
                and tokens[-1][1] in ("-", "+")
                and (len(tokens) < 2 or not _ends_value(*tokens[-2]))
            ):
                tokens[-1] = _QMARK
            else:
                append(_QMARK)
        elif kind == _STRING or kind == _PARAM:
            append(_QMARK)
        elif kind == _OP and token == "%%":
            append((_OP, "%"))
        else:
            append((kind, token))
    while tokens and tokens[-1] == _SEMICOLON:
        tokens.pop()
    return tokens


def _apply_case(tokens: list[Token]) -> None:
    """Upper-case keywords, turn TRUE/FALSE into "?" and savepoint names into "?"."""
    count = len(tokens)
    for i, (kind, token) in enumerate(tokens):
        if kind != _WORD:
            continue
        upper = token.upper()
        if upper not in _KEYWORDS:
            continue
        if i:
            before = tokens[i - 1]
            if before == _DOT or (before[0] == _WORD and before[1].upper() == "AS"):
                continue
        if i + 1 < count and tokens[i + 1] == _DOT:
            continue
        tokens[i] = _QMARK if upper in ("TRUE", "FALSE") else (_WORD, upper)

    first = tokens[0][1] if tokens and tokens[0][0] == _WORD else ""
    if first not in ("SAVEPOINT", "RELEASE", "ROLLBACK"):
        return
    for i in range(count - 1):
        token = tokens[i][1]
        if token == "SAVEPOINT" or (i == 0 and token == "RELEASE") or (token == "TO" and i > 0):
            kind, name = tokens[i + 1]
            # Only a plain name: a keyword here would change how "[" after it is read.
            if kind == _QIDENT or (kind == _WORD and name.upper() not in _KEYWORDS):
                tokens[i + 1] = _QMARK


def _matching_parens(tokens: list[Token]) -> list[int]:
    """Index of the ")" closing each "(" (len(tokens) when it is never closed)."""
    count = len(tokens)
    match = [-1] * count
    stack: list[int] = []
    for i, token in enumerate(tokens):
        if token == _OPEN:
            stack.append(i)
        elif token == _CLOSE and stack:
            match[stack.pop()] = i
    for i in stack:
        match[i] = count
    return match


def _split_items(tokens: list[Token], start: int, end: int) -> list[list[Token]]:
    """Split tokens[start:end] on its top-level commas."""
    items: list[list[Token]] = [[]]
    depth = 0
    for token in tokens[start:end]:
        text = token[1]
        if token[0] == _PUNCT:
            if text in ("(", "["):
                depth += 1
            elif text in (")", "]"):
                depth -= 1
            elif text == "," and depth == 0:
                items.append([])
                continue
        items[-1].append(token)
    return items


def _is_placeholder_group(tokens: list[Token], *, allow_array: bool) -> bool:
    """Only placeholders, brackets, commas and casts ("?::INTEGER", "(?, ?)", "ARRAY[?]")."""
    seen_param = False
    after_cast = False
    for kind, text in tokens:
        if kind == _PARAM:
            seen_param = True
        elif kind == _CAST:
            after_cast = True
        elif kind == _PUNCT:
            if text not in ("(", ")", "[", "]", ","):
                return False
        elif kind == _WORD:
            if not (after_cast or (allow_array and text == "ARRAY")):
                return False
        else:
            return False
    return seen_param


def _collapse(tokens: list[Token]) -> list[Token]:
    """Collapse IN lists, ANY(ARRAY[...]) and multi-row VALUES."""
    count = len(tokens)
    match = _matching_parens(tokens)
    out: list[Token] = []
    jumps: dict[int, int] = {}  # skip the rows a VALUES collapse dropped
    i = 0
    while i < count:
        if i in jumps:
            i = jumps.pop(i)
            continue
        token = tokens[i]
        if token[0] == _WORD and i + 1 < count and tokens[i + 1] == _OPEN:
            word = token[1]
            close = match[i + 1]
            if word == "IN":
                items = _split_items(tokens, i + 2, close)
                if close == count and len(items) > 1 and not items[-1]:
                    items.pop()  # truncated mid-list: "IN (?, ?, "
                if all(_is_placeholder_group(item, allow_array=False) for item in items):
                    out += (token, _OPEN, *items[0], _CLOSE)
                    i = close + 1
                    continue
            elif word in ("ANY", "SOME", "ALL") and out and out[-1][0] == _OP:
                if _is_placeholder_group(tokens[i + 2 : close], allow_array=True):
                    out += (token, _OPEN, _QMARK, _CLOSE)
                    i = close + 1
                    continue
            elif word == "VALUES" and close < count:
                columns = len(_split_items(tokens, i + 2, close))
                j = end = close + 1
                while j + 1 < count and tokens[j] == _COMMA and tokens[j + 1] == _OPEN:
                    row_close = match[j + 1]
                    if row_close == count:
                        end = count  # a row cut off by truncation
                        break
                    if len(_split_items(tokens, j + 2, row_close)) != columns:
                        break
                    j = end = row_close + 1
                if end > close + 1:
                    jumps[close + 1] = end
        out.append(token)
        i += 1
    return out


def _glue(tokens: list[Token], i: int) -> bool:
    """Whether tokens[i] is written right after tokens[i - 1], without a space."""
    prev_kind, prev = tokens[i - 1]
    kind, text = tokens[i]
    if prev_kind == _PUNCT and prev in ("(", "[", "."):
        return True
    if prev_kind == _CAST:
        return True
    if kind == _CAST:
        # ": ::x" must not become ":::x", which would read back as ":: :x".
        return prev_kind != _OTHER
    if kind != _PUNCT:
        return False
    if text != "(":
        # "[" only reaches here as a subscript (a bracket identifier is a _QIDENT).
        return text in (")", "]", ",", ".", ";", "[")
    # "(": glued to a function name, spaced after a keyword or a table name.
    if prev_kind == _WORD:
        if prev in _FUNCTION_KEYWORDS:
            return True
        if prev == "ALL":  # "> ALL(?)" but "UNION ALL (SELECT ...)"
            return i >= 2 and tokens[i - 2][0] == _OP
        if prev in _KEYWORDS:
            return False
    elif prev_kind != _QIDENT:
        return False
    # Walk back over a dotted name ("schema.table") to the word before it.
    j = i - 1
    while j >= 2 and tokens[j - 1] == _DOT and tokens[j - 2][0] in (_WORD, _QIDENT):
        j -= 2
    return not (j >= 1 and tokens[j - 1][0] == _WORD and tokens[j - 1][1] in _TABLE_KEYWORDS)


def _render(tokens: list[Token]) -> str:
    parts: list[str] = []
    for i, (_, text) in enumerate(tokens):
        if i and not _glue(tokens, i):
            parts.append(" ")
        parts.append(text)
    return "".join(parts)


def _fallback(sql: str) -> str:
    try:
        return " ".join(str(sql)[:MAX_INPUT_CHARS].split())
    except Exception:
        return ""


def normalize(sql: str) -> str:
    """The shape of ``sql``: literals and placeholders as ``?``, lists collapsed, one line.

    See the module docstring for the exact rules. Never raises.
    """
    try:
        tokens = _tokens(sql[:MAX_INPUT_CHARS])
        _apply_case(tokens)
        return _render(_collapse(tokens))
    except Exception:
        return _fallback(sql)


def _digest(normalized: str) -> str:
    data = normalized.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def fingerprint(sql: str) -> str:
    """16 lowercase hex chars identifying the shape of ``sql``; stable across processes."""
    try:
        return _digest(normalize(sql))
    except Exception:
        return _digest("")


# --------------------------------------------------------------------------------------------
# operation / is_transaction_control
# --------------------------------------------------------------------------------------------

_VERBS: Final = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})


def operation(sql: str) -> Operation:
    """SELECT, INSERT, UPDATE or DELETE from the first keyword, else OTHER.

    Leading comments and parentheses are skipped; after ``WITH`` the main verb is the first
    one outside the parenthesized CTE bodies.
    """
    try:
        depth = base = 0
        in_with = False
        for kind, token in _significant(sql[:MAX_INPUT_CHARS]):
            if token == "(" and kind == _PUNCT:
                depth += 1
            elif not in_with:
                if kind != _WORD:
                    return "OTHER"
                upper = token.upper()
                if upper == "WITH":
                    in_with = True
                    base = depth
                    continue
                return _verb(upper)
            elif kind == _PUNCT and token == ")":
                depth -= 1
                if depth < base:
                    return "OTHER"
            elif kind == _WORD and depth == base and token.upper() in _VERBS:
                return _verb(token.upper())
        return "OTHER"
    except Exception:
        return "OTHER"


def _verb(upper: str) -> Operation:
    if upper == "SELECT":
        return "SELECT"
    if upper == "INSERT":
        return "INSERT"
    if upper == "UPDATE":
        return "UPDATE"
    if upper == "DELETE":
        return "DELETE"
    return "OTHER"


_CONTROL_WORDS: Final = frozenset({"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"})


def is_transaction_control(sql: str) -> bool:
    """BEGIN, START TRANSACTION, COMMIT, END, ROLLBACK [TO SAVEPOINT], SAVEPOINT, RELEASE."""
    try:
        words = _significant(sql[:MAX_INPUT_CHARS])
        kind, token = next(words, (_WS, ""))
        if kind != _WORD:
            return False
        upper = token.upper()
        if upper in _CONTROL_WORDS:
            return True
        if upper == "START":
            kind, token = next(words, (_WS, ""))
            return kind == _WORD and token.upper() == "TRANSACTION"
        return False
    except Exception:
        return False


# --------------------------------------------------------------------------------------------
# shorten
# --------------------------------------------------------------------------------------------

# Words at the level of a SELECT that end its column list when there is no FROM.
_SELECT_LIST_END: Final = frozenset(
    "SELECT UNION INTERSECT EXCEPT WHERE GROUP HAVING ORDER LIMIT OFFSET FETCH FOR INTO WINDOW "
    "RETURNING VALUES".split()
)


def _column_list_cut(tokens: list[tuple[int, str, bool]], select: int) -> tuple[int, int] | None:
    """(first top-level comma, FROM) of the SELECT at ``select``, if it has several columns."""
    depth = 0
    comma = -1
    for j in range(select + 1, len(tokens)):
        kind, text, _ = tokens[j]
        if kind == _PUNCT:
            if text in ("(", "["):
                depth += 1
            elif text in (")", "]"):
                depth -= 1
                if depth < 0:
                    return None
            elif depth == 0 and text == ",":
                if comma < 0:
                    comma = j
            elif depth == 0 and text == ";":
                return None
        elif depth == 0 and kind == _WORD:
            upper = text.upper()
            if upper == "FROM":
                return (comma, j) if comma > 0 else None
            if upper in _SELECT_LIST_END:
                return None
    return None


def _one_line(tokens: list[tuple[int, str, bool]]) -> str:
    parts: list[str] = []
    for _, text, spaced in tokens:
        if spaced and parts:
            parts.append(" ")
        parts.append(text)
    return " ".join("".join(parts).split())


def shorten(sql: str, width: int = 120) -> str:
    """``sql`` on one line, for messages, at most ``width`` characters.

    Comments are dropped and whitespace collapsed. When that is still longer than ``width``,
    each SELECT column list becomes ``SELECT books.id, ... FROM``, and what is still too long
    is cut and ends with ``...``. Literals are kept as written.
    """
    try:
        if width <= 0:
            return ""
        tokens: list[tuple[int, str, bool]] = []
        spaced = False
        for kind, token in _scan(sql[:MAX_INPUT_CHARS]):
            if kind <= _COMMENT:
                spaced = True
            else:
                tokens.append((kind, token, spaced))
                spaced = False
        line = _one_line(tokens)
        if len(line) <= width:
            return line

        collapsed: list[tuple[int, str, bool]] = []
        jumps: dict[int, int] = {}
        i = 0
        while i < len(tokens):
            if i in jumps:
                collapsed += ((_PUNCT, ",", False), (_OTHER, "...", True))
                i = jumps.pop(i)
                collapsed.append((_WORD, tokens[i][1], True))
                i += 1
                continue
            kind, text, _ = tokens[i]
            if kind == _WORD and text.upper() == "SELECT":
                cut = _column_list_cut(tokens, i)
                if cut is not None:
                    jumps[cut[0]] = cut[1]
            collapsed.append(tokens[i])
            i += 1
        line = _one_line(collapsed)
        if len(line) <= width:
            return line
        if width <= 3:
            return "." * width
        return line[: width - 3].rstrip() + "..."
    except Exception:
        try:
            line = " ".join(str(sql)[:MAX_INPUT_CHARS].split())
            return line if len(line) <= width else line[: max(width - 3, 0)] + "..."[:width]
        except Exception:
            return ""


# --------------------------------------------------------------------------------------------
# Shape
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shape:
    """Everything the profiler needs to know about one statement text."""

    sql: str
    """``normalize(text)``"""
    fingerprint: str
    """``fingerprint(text)``: 16 lowercase hex chars."""
    operation: Operation
    is_control: bool
    """``is_transaction_control(text)``"""


@functools.lru_cache(maxsize=SHAPE_CACHE_SIZE)
def shape_of(text: str) -> Shape:
    """The :class:`Shape` of a statement text, from a bounded LRU cache keyed by the text.

    SQLAlchemy sends the same few statement texts over and over, so the tokenizer runs once
    per distinct text. ``shape_of.cache_clear()`` empties the cache (and resets its stats).
    """
    sql = normalize(text)
    return Shape(
        sql=sql,
        fingerprint=_digest(sql),
        operation=operation(text),
        is_control=is_transaction_control(text),
    )


def shape_cache_stats() -> dict[str, int]:
    """Size and hit/miss counters of the :func:`shape_of` cache (``evicted`` is derived)."""
    info = shape_of.cache_info()
    return {
        "size": info.currsize,
        "max_size": info.maxsize or 0,
        "hits": info.hits,
        "misses": info.misses,
        "evicted": max(info.misses - info.currsize, 0),
    }
