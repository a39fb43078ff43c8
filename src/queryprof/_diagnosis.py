"""What a scope ran, as the lines of a failure message: repeats collapsed, call sites, fixes.

Shared by the pytest plugin and :mod:`queryprof.testing`::

    20 x SELECT blog_posts.id, ... FROM blog_posts WHERE ? = blog_posts.author_id   from r.py:9 in f
         N+1: lazy load of Author.posts -> selectinload(Author.posts)
     1 x SELECT blog_authors.id, ... FROM blog_authors ORDER BY blog_authors.id   from r.py:7 in f
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from queryprof.detect._common import location
from queryprof.findings import Finding
from queryprof.fingerprint import shorten
from queryprof.scope import Record, Scope

SQL_WIDTH = 120  # as in Finding.describe()
MAX_SHAPES = 10

# (fingerprint, call site): one line of the diagnosis
ShapeKey = tuple[str, str | None]


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def shape_counts(records: Iterable[Record]) -> Counter[ShapeKey]:
    """How many statements of each shape each call site ran, in order of first appearance.

    Call sites are described as the detectors describe them, so findings match their lines.
    """
    return Counter((r.shape.fingerprint, location(r)) for r in records)


def sql_of(records: Iterable[Record]) -> dict[str, str]:
    """fingerprint -> the statement shape, shortened for a message."""
    found: dict[str, str] = {}
    for r in records:
        if r.shape.fingerprint not in found:
            found[r.shape.fingerprint] = shorten(r.shape.sql, SQL_WIDTH)
    return found


def note(finding: Finding) -> str:
    """``N+1: lazy load of Author.posts -> selectinload(Author.posts)``: cause and fix."""
    cause = f"lazy load of {finding.relationship}" if finding.relationship else "one per item"
    return f"N+1: {cause} -> {finding.suggestion}"


def scope_lines(scope: Scope, *, indent: str = "  ") -> list[str]:
    """The statements of a closed scope, collapsed by shape and call site, most first, with
    each N+1 under the statement it repeats."""
    records = scope.records
    n_plus_one = [f for f in scope.findings if f.kind == "n_plus_one"]
    lines = shape_lines(shape_counts(records), sql_of(records), n_plus_one, indent=indent)
    if scope.dropped_queries:
        lines.append(f"{indent}(and {plural(scope.dropped_queries, 'statement')} not recorded)")
    return lines


def shape_lines(
    counts: Mapping[ShapeKey, int] | Mapping[ShapeKey, Sequence[int]],
    sql: dict[str, str],
    n_plus_one: Sequence[Finding] = (),
    *,
    indent: str = "  ",
) -> list[str]:
    """One line per shape and call site, the N+1 findings about it underneath.

    ``counts`` maps each shape to a count, or to a sequence of counts (one per scale,
    printed ``2 -> 5 x``); the largest (last) count orders the lines. Other findings are
    left out on purpose: in a test, several requests repeating a lookup is normal.
    """
    labels = {key: _count_label(value) for key, value in counts.items()}
    width = max((len(label) for label in labels.values()), default=1)
    order = sorted(counts, key=lambda key: -_last(counts[key]))  # stable: first seen first
    notes: dict[ShapeKey, list[Finding]] = {}
    for finding in n_plus_one:
        notes.setdefault((finding.fingerprint, finding.location), []).append(finding)
    lines = []
    for key in order[:MAX_SHAPES]:
        fingerprint, site = key
        line = f"{indent}{labels[key]:>{width}} x {sql.get(fingerprint, fingerprint)}"
        lines.append(f"{line}   from {site}" if site else line)
        lines.extend(f"{indent}{' ' * (width + 3)}{note(f)}" for f in notes.pop(key, ()))
    rest = order[MAX_SHAPES:]
    if rest:
        statements = sum(_last(counts[key]) for key in rest)
        lines.append(
            f"{indent}... and {plural(len(rest), 'more shape')} ({plural(statements, 'statement')})"
        )
    lines.extend(f"{indent}{finding}" for found in notes.values() for finding in found)
    return lines


def _last(value: int | Sequence[int]) -> int:
    return value if isinstance(value, int) else value[-1]


def _count_label(value: int | Sequence[int]) -> str:
    return str(value) if isinstance(value, int) else " -> ".join(str(v) for v in value)


def display(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the working directory when it is below it, else as it is."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return os.fspath(path)
    return os.fspath(path) if relative.startswith("..") else relative
