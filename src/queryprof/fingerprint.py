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
  ``IN ($1::INTEGER, $2::INTEGER)`` -> ``IN (?::INTEGER)``. ``= ANY(...)`` over a placeholder
  or an ``ARRAY[...]`` of them collapses to ``= ANY(?)`` (``SOME``/``ALL`` likewise).
* Multi-row ``VALUES (...), (...), ...`` keeps only its first row while the following rows have
  the same number of columns (a trailing row cut off by truncation is dropped too).
* Savepoint names become ``?``: ``SAVEPOINT ?``, ``RELEASE [SAVEPOINT] ?``,
  ``ROLLBACK TO [SAVEPOINT] ?``.
* Case: words in a fixed set of SQL keywords are upper-cased; every other identifier is kept
  exactly as written (so ``Books`` and ``books`` stay different shapes), and so are quoted
  identifiers (``"select"``, ```order```, ``[From]``; ``[`` after a value is a subscript, as
  in ``a[1]`` or ``ARRAY[?]``). Function names are identifiers (``count`` stays ``count``).
  A keyword-looking word next to a ``.`` (``t.key``) or right after ``AS`` is a name and
  keeps its case.
* Layout: tokens are separated by one space, except none inside parentheses/brackets, before
  ``,``/``.``/``;``, around ``.`` and ``::``, and between a function name and its ``(``
  (``count(*)``, ``ANY(?)``; but ``INSERT INTO t (a)`` and ``IN (?)`` keep the space).
  Control characters count as whitespace. Trailing semicolons are dropped.

``normalize`` is idempotent: normalizing a normalized statement returns it unchanged (for
statements whose normalized form is within the size limit).

:func:`shape_of` caches shapes, so that the tokenizer runs once per distinct statement text. Its
memory is bounded whatever the application sends:

* a text of up to :data:`MAX_KEYED_CHARS` (4 KiB) characters is its own key, in an LRU cache of
  :data:`SHAPE_CACHE_SIZE` (4096) entries;
* a longer text is keyed by a 16-byte digest of the part that is tokenized (its first
  :data:`MAX_INPUT_CHARS`), in an LRU cache of :data:`LONG_SHAPE_CACHE_SIZE` (256) entries: a
  1 MB statement is never kept, and its second run costs a digest, not a tokenization;
* the shape text a :class:`Shape` keeps (``Shape.sql``, which findings, records and log lines
  carry) is cut to :data:`MAX_SHAPE_CHARS` (4 KiB) characters, ending in `` ...``. The
  fingerprint is computed before the cut, so it still tells long shapes apart.

So the caches hold at most about 4096 x 8 KiB + 256 x 4 KiB of text (33 MiB), and in practice
(ORM statements of a few hundred characters) well under a megabyte.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal, Protocol, cast

__all__ = [
    "LONG_SHAPE_CACHE_SIZE",
    "MAX_INPUT_CHARS",
    "MAX_KEYED_CHARS",
    "MAX_SHAPE_CHARS",
    "SHAPE_CACHE_SIZE",
    "Operation",
    "Shape",
    "fingerprint",
    "is_transaction_control",
    "long_shape_cache_size",
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
"""Entries kept by the :func:`shape_of` LRU cache of statement texts."""

MAX_KEYED_CHARS: Final = 4096
"""Statement texts up to this long are cache keys themselves; longer ones are keyed by a digest."""

LONG_SHAPE_CACHE_SIZE: Final = 256
"""Entries kept by the :func:`shape_of` cache of texts longer than :data:`MAX_KEYED_CHARS`."""

MAX_SHAPE_CHARS: Final = 4096
"""Longest ``Shape.sql`` kept; a longer shape is cut and ends in ``" ..."``."""

# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------

# Token kinds. _STRING, _NUMBER and _PARAM all become "?" when normalizing, but _NUMBER is kept
# apart so that a unary minus before it can be folded in. _KEYWORD is never produced by the
# scanner: normalize turns a _WORD into one once it has decided the word is a keyword.
_STRING: Final = 1
_NUMBER: Final = 2
_PARAM: Final = 3
_QIDENT: Final = 4
_WORD: Final = 5
_KEYWORD: Final = 6
_CAST: Final = 7
_OP: Final = 8
_PUNCT: Final = 9
_LBRACKET: Final = 10  # "[": a quoted identifier or a subscript, decided by what precedes it
_OTHER: Final = 11
_END: Final = 12  # the (empty) end of the text, after any trailing whitespace and comments

# An identifier, plain or quoted ("..." for the standard and PostgreSQL, `...` for MySQL).
_NAME: Final = r"""(?:[^\W\d][\w$]*|"(?:[^"]+|"")*+(?:"|\Z)|`(?:[^`]+|``)*+(?:`|\Z))"""

# One match per significant token: first the whitespace and comments before it (skipped, never
# a token of their own, which halves the number of matches), then one alternative per kind,
# tried in order. Every alternative either fails after a bounded look or runs through to its
# end (an unterminated string, comment or quoted identifier takes the rest of the text), so a
# scan is linear in the length of the text. A dotted name ("books.id", "s."T".c") is a single
# token: ORM statements are mostly made of them.
_TOKEN_RE: Final = re.compile(
    r"""
    (?:[\s\x00-\x08\x0e-\x1b\x7f\u200b-\u200d\u2060\ufeff]+
      | --[^\n\r]*
      | /\*[\s\S]*?(?:\*/|\Z)
    )*+
    (?:
      (?P<punct>[(),;\]{}]|\.(?!\d))  # ".5" is a number
      # E'...' is PostgreSQL's escape string, the only one where a backslash escapes a quote.
      # It and the prefixed strings (N'', X'', B'', U&'') come before <word>, which would
      # otherwise take the prefix letter.
    | (?P<estring>[eE]'(?:[^'\\]+|\\[\s\S]|'')*+(?:'|\\?\Z))
    | (?P<string>(?:[nNbBxX]|[uU]&)?'(?:[^']+|'')*+(?:'|\Z))
      # SQLAlchemy's "expanding IN" marker, also before <word> (which would take the "__").
    | (?P<postcompile>__\[POSTCOMPILE_[^\]]*(?:\]|\Z))
    | (?P<word>[^\W\d][\w$]*(?:\.NAME)*)
    | (?P<qident>(?:"(?:[^"]+|"")*+(?:"|\Z)|`(?:[^`]+|``)*+(?:`|\Z))(?:\.NAME)*)
      # "::" before <param>, so that a PostgreSQL cast is never read as a ":name" placeholder.
    | (?P<cast>::)
    | (?P<param>\$\d+|%\([^()\s]{1,128}\)s|%s|\?|:[^\W\d][\w$]*)
    | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
      # $$...$$ or $tag$...$tag$. The tag group always takes part (maybe empty) so that the
      # back-reference also works for $$; "$1" is not one (a tag cannot start with a digit).
    | (?P<dollar>\$(?P<tag>(?:[^\W\d]\w*)?)\$[\s\S]*?(?:\$(?P=tag)\$|\Z))
    | (?P<lbracket>\[)
    | (?P<op>%%|->>?|\#>>?|<=>|<[=>@<]|>[=>]|!=|==|\|\||@>|&&|!?~\*?|[-+*/<>=~!@\#%^&|])
    | (?P<other>[\s\S])
      # Nothing left but whitespace or comments: without this, the search would skip into a
      # trailing comment and read "-- x" as "-", "x".
    | (?P<end>\Z)
    )
    """.replace("NAME", _NAME),
    re.VERBOSE,
)

# A bracket-quoted identifier (SQLite, SQL Server): "[" up to the next "]", or to the end.
_BRACKET_RE: Final = re.compile(r"\[[^\]]*+(?:\]|\Z)")

_GROUP_KINDS: Final = {
    "punct": _PUNCT,
    "estring": _STRING,
    "string": _STRING,
    "postcompile": _PARAM,
    "word": _WORD,
    "qident": _QIDENT,
    "cast": _CAST,
    "param": _PARAM,
    "number": _NUMBER,
    "dollar": _STRING,
    "lbracket": _LBRACKET,
    "op": _OP,
    "other": _OTHER,
    "end": _END,
}


def _kind_table() -> tuple[int, ...]:
    # Match.lastindex is the outermost group of the alternative that matched (the inner "tag"
    # group closes first), so a tuple indexed by it gives the kind of a match.
    table = [_OTHER] * (_TOKEN_RE.groups + 1)
    for name, index in _TOKEN_RE.groupindex.items():
        if name in _GROUP_KINDS:
            table[index] = _GROUP_KINDS[name]
    return tuple(table)


_KIND_BY_GROUP: Final = _kind_table()

# Words upper-cased by normalize. Deliberately mostly reserved words: column names such as
# "name", "key", "type", "value" or "date" must not be touched.
_KEYWORDS: Final = frozenset(
    {
        *("ALL", "ALTER", "AND", "ANY", "ARRAY", "AS", "ASC", "BEGIN", "BETWEEN", "BY"),
        *("CASE", "CAST", "CHECK", "COLLATE", "COMMIT", "CONFLICT", "CONSTRAINT", "CREATE"),
        *("CROSS", "CURRENT_DATE", "CURRENT_TIME", "CURRENT_TIMESTAMP", "CURRENT_USER"),
        *("DEFAULT", "DELETE", "DESC", "DISTINCT", "DO", "DROP", "DUPLICATE", "ELSE", "END"),
        *("ESCAPE", "EXCEPT", "EXISTS", "EXPLAIN", "FALSE", "FETCH", "FILTER", "FIRST", "FOR"),
        *("FOREIGN", "FROM", "FULL", "GROUP", "HAVING", "IF", "ILIKE", "IN", "INDEX", "INNER"),
        *("INSERT", "INTERSECT", "INTERVAL", "INTO", "IS", "JOIN", "LAST", "LATERAL", "LEFT"),
        *("LIKE", "LIMIT", "LOCALTIME", "LOCALTIMESTAMP", "LOCKED", "MATERIALIZED", "NATURAL"),
        *("NEXT", "NOT", "NOTHING", "NOWAIT", "NULL", "NULLS", "OF", "OFFSET", "ON", "ONLY"),
        *("OR", "ORDER", "OUTER", "OVER", "PARTITION", "PRIMARY", "RECURSIVE", "REFERENCES"),
        *("RELEASE", "RETURNING", "RIGHT", "ROLLBACK", "ROW", "ROWS", "SAVEPOINT", "SELECT"),
        *("SET", "SHARE", "SIMILAR", "SKIP", "SOME", "START", "TABLE", "THEN", "TO"),
        *("TRANSACTION", "TRUE", "TRUNCATE", "UNION", "UNIQUE", "UPDATE", "USING", "VALUES"),
        *("VIEW", "WHEN", "WHERE", "WINDOW", "WITH", "WORK"),
    }
)
# Keywords that end a value: "NULL - 1" is a subtraction, "TRUE[1]" and "ARRAY[1]" subscripts.
_VALUE_KEYWORDS: Final = frozenset(
    {
        *("NULL", "TRUE", "FALSE", "END", "ARRAY", "CURRENT_DATE", "CURRENT_TIME"),
        *("CURRENT_TIMESTAMP", "CURRENT_USER", "LOCALTIME", "LOCALTIMESTAMP"),
    }
)
# Keywords written like functions: no space before their "(".
_FUNCTION_KEYWORDS: Final = frozenset({"ANY", "SOME", "CAST", "ARRAY"})
# "INTO t (a, b)": a name after these is a table, not a function call, so "(" keeps its space.
_TABLE_KEYWORDS: Final = frozenset({"INTO", "TABLE", "REFERENCES", "VIEW", "EXISTS"})
# Keywords followed by a list that _collapse may shorten.
_LIST_KEYWORDS: Final = frozenset({"IN", "ANY", "SOME", "ALL", "VALUES"})

_DOT: Final = (_PUNCT, ".")
_OPEN: Final = (_PUNCT, "(")
_CLOSE: Final = (_PUNCT, ")")
_COMMA: Final = (_PUNCT, ",")
_SEMICOLON: Final = (_PUNCT, ";")
_QMARK: Final = (_PARAM, "?")
_AS: Final = (_KEYWORD, "AS")

Token = tuple[int, str]


def _ends_value(kind: int, text: str) -> bool:
    """Whether a token can end an operand (then a "-" after it is binary)."""
    if kind in (_STRING, _NUMBER, _PARAM, _QIDENT):
        return True
    if kind == _KEYWORD:
        return text in _VALUE_KEYWORDS
    if kind == _WORD:
        upper = text.upper()
        return upper not in _KEYWORDS or upper in _VALUE_KEYWORDS
    return kind == _PUNCT and text in (")", "]")


def _is_subscript(before: Token | None, before_that: Token | None) -> bool:
    """Whether a "[" after these tokens is a subscript ("x[1]", "ARRAY[...]"), not "[name]".

    A keyword-looking word right after a "." is a column ("t.select[1]"): normalize writes
    "t . select" as the single token "t.select", and both must read the same way.
    """
    if before is None:
        return False
    if before[0] == _WORD and before_that == _DOT:
        return True
    return _ends_value(*before)


def _bracket(text: str, start: int) -> int:
    """End of the bracket-quoted identifier starting at ``start``."""
    bracket = _BRACKET_RE.match(text, start)
    return bracket.end() if bracket else start + 1


def _scan(text: str) -> Iterator[tuple[int, str, bool]]:
    """Yield (kind, text, preceded by whitespace or a comment) for each significant token."""
    before: Token | None = None
    before_that: Token | None = None
    pos = 0
    while pos < len(text):
        for match in _TOKEN_RE.finditer(text, pos):
            group = match.lastindex or 0
            kind = _KIND_BY_GROUP[group]
            start = match.start(group)
            token = match.group(group)
            if kind == _END:
                return
            if kind == _LBRACKET:
                if not _is_subscript(before, before_that):
                    pos = _bracket(text, start)
                    yield _QIDENT, text[start:pos], start > match.start()
                    before, before_that = (_QIDENT, text[start:pos]), before
                    break  # the identifier may hold anything: rescan after it
                kind = _PUNCT
            yield kind, token, start > match.start()
            before, before_that = (kind, token), before
        else:
            return


# --------------------------------------------------------------------------------------------
# normalize
# --------------------------------------------------------------------------------------------


def _tokens(text: str) -> tuple[list[Token], bool]:
    """Significant tokens of ``text`` as normalize sees them, and whether _collapse is needed.

    This is _scan inlined (normalize is the hot path) plus the per-token rules: literals and
    placeholders become "?", keywords are upper-cased (kind _KEYWORD), TRUE/FALSE become "?".
    A keyword-looking word right after AS or next to a "." is a name and keeps its case.
    """
    tokens: list[Token] = []
    append = tokens.append
    kinds = _KIND_BY_GROUP
    has_list = False
    keyword_at = -1  # index of the last token made from a keyword, and its text as written
    keyword_text = ""
    pos = 0
    while pos < len(text):
        for match in _TOKEN_RE.finditer(text, pos):
            group = match.lastindex or 0
            kind = kinds[group]
            if kind == _WORD:
                word = match.group(group)
                upper = word.upper()
                if upper not in _KEYWORDS or (tokens and tokens[-1] in (_DOT, _AS)):
                    append((_WORD, word))
                    continue
                keyword_at = len(tokens)
                keyword_text = word
                if upper in ("TRUE", "FALSE"):
                    append(_QMARK)
                else:
                    append((_KEYWORD, upper))
                    has_list = has_list or upper in _LIST_KEYWORDS
            elif kind == _PUNCT:
                punct = match.group(group)
                if punct == "." and tokens and keyword_at == len(tokens) - 1:
                    tokens[-1] = (_WORD, keyword_text)  # "select.x": a name after all
                append((_PUNCT, punct))
            elif kind in (_STRING, _PARAM):
                append(_QMARK)
            elif kind == _NUMBER:
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
            elif kind == _LBRACKET:
                before = tokens[-1] if tokens else None
                before_that = tokens[-2] if len(tokens) > 1 else None
                if not _is_subscript(before, before_that):
                    start = match.start(group)
                    pos = _bracket(text, start)
                    append((_QIDENT, text[start:pos]))
                    break  # the identifier may hold anything: rescan after it
                append((_PUNCT, "["))
            elif kind == _OP and match.group(group) == "%%":
                append((_OP, "%"))  # format-style drivers escape the modulo operator
            elif kind != _END:
                append((kind, match.group(group)))
        else:
            break
    while tokens and tokens[-1] == _SEMICOLON:
        tokens.pop()
    if tokens and tokens[0][0] == _KEYWORD and tokens[0][1] in ("SAVEPOINT", "RELEASE", "ROLLBACK"):
        _savepoint_names(tokens)
    return tokens, has_list


def _savepoint_names(tokens: list[Token]) -> None:
    """SAVEPOINT x, RELEASE [SAVEPOINT] x, ROLLBACK [WORK] TO [SAVEPOINT] x: x becomes "?".

    Only a plain name: a keyword there would change how a "[" after it reads back.
    """
    for i in range(len(tokens) - 1):
        kind, word = tokens[i]
        if (
            kind == _KEYWORD
            and (word in ("SAVEPOINT", "TO") or (i == 0 and word == "RELEASE"))
            and tokens[i + 1][0] in (_WORD, _QIDENT)
        ):
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
        if token[0] == _PUNCT:
            text = token[1]
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
    depth = 0  # brackets must balance, or collapsing would add or drop one
    for kind, text in tokens:
        if kind == _PARAM:
            seen_param = True
        elif kind == _CAST:
            after_cast = True
        elif kind == _PUNCT:
            if text in ("(", "["):
                depth += 1
            elif text in (")", "]"):
                depth -= 1
                if depth < 0:
                    return False
            elif text != ",":
                return False
        elif kind in (_WORD, _KEYWORD, _QIDENT):
            # Type names after "::" ("TIMESTAMP WITH TIME ZONE"), and ARRAY in ANY(ARRAY[...]).
            if not (after_cast or (allow_array and kind == _KEYWORD and text == "ARRAY")):
                return False
        else:
            return False
    return seen_param and depth == 0


def _collapse(tokens: list[Token]) -> list[Token]:
    """Collapse IN lists, ANY(ARRAY[...]) and multi-row VALUES."""
    count = len(tokens)
    match = _matching_parens(tokens)
    out: list[Token] = []
    jumps: dict[int, int] = {}  # where a VALUES collapse skips the rows it dropped
    i = 0
    while i < count:
        if i in jumps:
            i = jumps.pop(i)
            continue
        token = tokens[i]
        if token[0] == _KEYWORD and i + 1 < count and tokens[i + 1] == _OPEN:
            word = token[1]
            close = match[i + 1]
            if word == "IN":
                items = _split_items(tokens, i + 2, close)
                if close == count and len(items) > 1:
                    items.pop()  # cut off by truncation, maybe mid-item: "IN (?, ?, $"
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
                while j < count and tokens[j] == _COMMA:
                    if j + 1 == count or tokens[j + 1] != _OPEN:
                        end = j + 1 if j + 1 == count else end  # cut after a comma
                        break
                    row_close = match[j + 1]
                    if row_close == count:
                        end = count  # a last row cut off by truncation
                        break
                    if len(_split_items(tokens, j + 2, row_close)) != columns:
                        break
                    j = end = row_close + 1
                if end > close + 1:
                    jumps[close + 1] = end
        out.append(token)
        i += 1
    return out


def _glue_paren(tokens: list[Token], i: int) -> bool:
    """Whether the "(" at ``i`` is written right after the name before it (a call)."""
    prev_kind, prev = tokens[i - 1]
    if prev_kind == _KEYWORD:
        if prev in _FUNCTION_KEYWORDS:
            return True
        # "> ALL(?)" but "UNION ALL (SELECT ...)"
        return prev == "ALL" and i >= 2 and tokens[i - 2][0] == _OP
    if prev_kind not in (_WORD, _QIDENT):
        return False
    # A name after INTO/TABLE/... is a table: "INSERT INTO t (a)". Walk back over a dotted
    # name written with spaces ("s . t"), which normalize writes as the single token "s.t".
    j = i - 1
    while j >= 2 and tokens[j - 1] == _DOT and tokens[j - 2][0] in (_WORD, _QIDENT):
        j -= 2
    return not (j and tokens[j - 1][0] == _KEYWORD and tokens[j - 1][1] in _TABLE_KEYWORDS)


def _render(tokens: list[Token]) -> str:
    """Join tokens with single spaces, except where _glue-like rules say otherwise.

    Whatever is written without a space must read back as the same tokens (idempotence):
    no two operators are ever adjacent, and ": ::x" keeps its space (":::x" reads as ":: :x").
    """
    if not tokens:
        return ""
    parts = [tokens[0][1]]
    prev_kind, prev = tokens[0]
    for i in range(1, len(tokens)):
        kind, text = tokens[i]
        if kind == _PUNCT and text in (",", ")", "]", ".", ";", "["):
            glue = True  # "[" is only _PUNCT as a subscript
        elif (prev_kind == _PUNCT and prev in ("(", "[", ".")) or prev_kind == _CAST:
            glue = True
        elif kind == _CAST:
            glue = prev_kind != _OTHER
        elif kind == _PUNCT and text == "(":
            glue = _glue_paren(tokens, i)
        else:
            glue = False
        parts.append(text if glue else " " + text)
        prev_kind, prev = kind, text
    return "".join(parts)


def _fallback(sql: str) -> str:
    try:
        return " ".join(str(sql)[:MAX_INPUT_CHARS].split())
    except Exception:
        return ""


def _normalize(sql: str) -> str:
    tokens, has_list = _tokens(sql[:MAX_INPUT_CHARS])
    if has_list:
        tokens = _collapse(tokens)
    # .strip(): an unterminated quoted identifier runs to the end, trailing spaces included.
    return _render(tokens).strip()


def normalize(sql: str) -> str:
    """The shape of ``sql``: literals and placeholders as ``?``, lists collapsed, one line.

    See the module docstring for the exact rules. Never raises.
    """
    try:
        return _normalize(sql)
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
        return _operation(sql)
    except Exception:
        return "OTHER"


def _operation(sql: str) -> Operation:
    depth = base = 0
    in_with = False
    for kind, token, _ in _scan(sql[:MAX_INPUT_CHARS]):
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
                return "OTHER"  # the end of a parenthesized WITH without a main statement
        elif kind == _WORD and depth == base and token.upper() in _VERBS:
            return _verb(token.upper())
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
_NO_TOKEN: Final = (_OTHER, "", False)


def is_transaction_control(sql: str) -> bool:
    """BEGIN, START TRANSACTION, COMMIT, END, ROLLBACK [TO SAVEPOINT], SAVEPOINT, RELEASE."""
    try:
        return _is_transaction_control(sql)
    except Exception:
        return False


def _is_transaction_control(sql: str) -> bool:
    words = _scan(sql[:MAX_INPUT_CHARS])
    kind, token, _ = next(words, _NO_TOKEN)
    if kind != _WORD:
        return False
    upper = token.upper()
    if upper in _CONTROL_WORDS:
        return True
    if upper == "START":
        kind, token, _ = next(words, _NO_TOKEN)
        return kind == _WORD and token.upper() == "TRANSACTION"
    return False


# --------------------------------------------------------------------------------------------
# shorten
# --------------------------------------------------------------------------------------------

# Words at the level of a SELECT that end its column list when there is no FROM.
_SELECT_LIST_END: Final = frozenset(
    {
        *("SELECT", "UNION", "INTERSECT", "EXCEPT", "WHERE", "GROUP", "HAVING", "ORDER"),
        *("LIMIT", "OFFSET", "FETCH", "FOR", "INTO", "WINDOW", "RETURNING", "VALUES"),
    }
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
        return _shorten(sql, width)
    except Exception:
        try:
            return _cut(" ".join(str(sql)[:MAX_INPUT_CHARS].split()), width)
        except Exception:
            return ""


def _cut(line: str, width: int) -> str:
    if len(line) <= width:
        return line
    if width <= 3:
        return "." * max(width, 0)
    return line[: width - 3].rstrip() + "..."


@functools.lru_cache(maxsize=1024)
def _shorten(sql: str, width: int) -> str:
    # Memoized: each request that makes a finding shortens the same few shapes again, and
    # tokenizing is the costliest part. Shapes are at most MAX_SHAPE_CHARS long: bounded.
    if width <= 0:
        return ""
    tokens = list(_scan(sql[:MAX_INPUT_CHARS]))
    line = _one_line(tokens)
    if len(line) <= width:
        return line

    collapsed: list[tuple[int, str, bool]] = []
    jumps: dict[int, int] = {}  # first comma of a column list -> its FROM
    i = 0
    while i < len(tokens):
        if i in jumps:
            i = jumps.pop(i)
            collapsed += ((_PUNCT, ",", False), (_OTHER, "...", True), (_WORD, tokens[i][1], True))
            i += 1
            continue
        kind, text, _ = tokens[i]
        if kind == _WORD and text.upper() == "SELECT":
            cut = _column_list_cut(tokens, i)
            if cut is not None:
                jumps[cut[0]] = cut[1]
        collapsed.append(tokens[i])
        i += 1
    return _cut(_one_line(collapsed), width)


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


def _shape(text: str) -> Shape:
    full = normalize(text)
    sql = full if len(full) <= MAX_SHAPE_CHARS else full[: MAX_SHAPE_CHARS - 4].rstrip() + " ..."
    return Shape(
        sql=sql,
        fingerprint=_digest(full),
        operation=operation(text),
        is_control=is_transaction_control(text),
    )


_keyed_shape = functools.lru_cache(maxsize=SHAPE_CACHE_SIZE)(_shape)
_long_shapes: OrderedDict[bytes, Shape] = OrderedDict()
_long_lock = threading.Lock()


def _long_shape(text: str) -> Shape:
    # Everything past MAX_INPUT_CHARS is ignored by _shape, so the digest of the prefix is a
    # faithful key; 16 bytes make a collision as unlikely as a fingerprint's.
    head = text[:MAX_INPUT_CHARS].encode("utf-8", "surrogatepass")
    key = hashlib.blake2b(head, digest_size=16).digest()
    with _long_lock:
        shape = _long_shapes.get(key)
        if shape is not None:
            _long_shapes.move_to_end(key)
            return shape
    shape = _shape(text)
    with _long_lock:
        _long_shapes[key] = shape
        while len(_long_shapes) > LONG_SHAPE_CACHE_SIZE:
            _long_shapes.popitem(last=False)
    return shape


class _ShapeOf(Protocol):
    """The type of :func:`shape_of`: a function with the cache controls of an ``lru_cache``."""

    def __call__(self, text: str) -> Shape: ...

    def cache_clear(self) -> None: ...

    def cache_info(self) -> functools._CacheInfo: ...


def _shape_of(text: str) -> Shape:
    """The :class:`Shape` of a statement text, from a bounded cache (see the module docstring).

    SQLAlchemy sends the same few statement texts over and over, so the tokenizer runs once
    per distinct text. ``shape_of.cache_clear()`` empties the caches (and resets the stats of
    the cache of short texts, ``shape_of.cache_info()``).
    """
    if len(text) <= MAX_KEYED_CHARS:
        return _keyed_shape(text)
    return _long_shape(text)


def _cache_clear() -> None:
    _keyed_shape.cache_clear()
    with _long_lock:
        _long_shapes.clear()


_shape_of.cache_clear = _cache_clear  # type: ignore[attr-defined]
_shape_of.cache_info = _keyed_shape.cache_info  # type: ignore[attr-defined]
shape_of = cast(_ShapeOf, _shape_of)


def shape_cache_stats() -> dict[str, int]:
    """Size and hit/miss counters of the :func:`shape_of` cache (``evicted`` is derived)."""
    info = _keyed_shape.cache_info()
    return {
        "size": info.currsize,
        "max_size": info.maxsize or 0,
        "hits": info.hits,
        "misses": info.misses,
        "evicted": max(info.misses - info.currsize, 0),
    }


def long_shape_cache_size() -> int:
    """Entries in the cache of texts longer than :data:`MAX_KEYED_CHARS` (at most 256)."""
    return len(_long_shapes)
