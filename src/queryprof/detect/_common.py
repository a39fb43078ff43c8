"""Helpers the detectors share: grouping records, call sites, transactions, allow lists.

They run once per closed scope, over every record, so they loop inline (no key function
per record) and turn a call site into its ``"path:line in function"`` text once per
distinct site, not once per record.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable
from fnmatch import fnmatchcase
from types import CodeType
from typing import Any, TypeVar

from queryprof._settings import Settings
from queryprof.callsite import describe
from queryprof.findings import Finding, Transaction
from queryprof.scope import Record, Scope

K = TypeVar("K", bound=Hashable)

_TABLE = re.compile(r"^(?:INSERT INTO|UPDATE|DELETE FROM)\s+([^\s(]+)", re.IGNORECASE)
_KEY_COLUMN = re.compile(r"\bWHERE\s+([\w.\"`]+)\s*=\s*\?", re.IGNORECASE)


def group(records: Iterable[Record], key: Callable[[Record], K]) -> dict[K, list[Record]]:
    groups: dict[K, list[Record]] = defaultdict(list)
    for r in records:
        groups[key(r)].append(r)
    return groups


def total(records: Iterable[Record]) -> float:
    return sum(r.duration for r in records)


def common_site(records: Iterable[Record]) -> str | None:
    """The call site most of these statements came from."""
    cwd = os.getcwd()
    sites: Counter[str | None] = Counter(location(r, cwd) for r in records)
    return sites.most_common(1)[0][0]


def by_shape_and_site(records: list[Record]) -> dict[tuple[str, str | None], list[Record]]:
    """Records grouped by (fingerprint, location), in order of first appearance.

    Grouped by the raw call site first (the code object's id and the bytecode offset), then
    described once per site; two sites on one line (same location) merge, in record order.
    """
    by_site: dict[tuple[str, int, int], list[Record]] = {}
    for r in records:
        site = r.site
        key = (
            (r.shape.fingerprint, 0, -1)
            if site is None
            else (r.shape.fingerprint, id(site[0]), site[1])
        )
        found = by_site.get(key)
        if found is None:
            by_site[key] = [r]
        else:
            found.append(r)
    if not by_site:
        return {}
    cwd = os.getcwd()
    groups: dict[tuple[str, str | None], list[Record]] = {}
    merged = False
    for (fingerprint, _, _), rs in by_site.items():
        key2 = (fingerprint, location(rs[0], cwd))
        found = groups.get(key2)
        if found is None:
            groups[key2] = rs
        else:
            found += rs
            merged = True
    if merged:  # rare: restore the records' order inside the merged groups
        order = {id(r): i for i, r in enumerate(records)}
        for rs in groups.values():
            rs.sort(key=lambda r: order[id(r)])
    return groups


# (id(code), offset) -> (code, cwd, location): the code object is kept so its id cannot be
# reused, and the cwd because paths are shown relative to it.
_locations: dict[tuple[int, int], tuple[CodeType, str, str | None]] = {}


def location(record: Record, cwd: str | None = None) -> str | None:
    """``"app/routes.py:42 in list_authors"`` for a record's call site (memoized).

    ``cwd``: ``os.getcwd()`` if the caller already has it (one system call per scope, not
    per record); paths are shown relative to it.
    """
    site = record.site
    if site is None:
        return None
    key = (id(site[0]), site[1])  # hashing a code object hashes its contents: use its id
    if cwd is None:
        cwd = os.getcwd()
    entry = _locations.get(key)
    if entry is not None and entry[0] is site[0] and entry[1] == cwd:
        return entry[2]
    found = describe(site)
    if len(_locations) >= 10_000:
        _locations.clear()
    _locations[key] = (site[0], cwd, found)
    return found


def table_of(sql: str) -> str | None:
    match = _TABLE.match(sql)
    return match.group(1) if match else None


def key_column(sql: str) -> str | None:
    """``"comments.id"`` for ``... WHERE comments.id = ?``: the column a loop filters on."""
    match = _KEY_COLUMN.search(sql)
    return match.group(1) if match else None


def transactions(scope: Scope) -> list[Transaction]:
    """The transactions the scope's statements ran in, from their records and the events."""
    # One pass: txn -> [first record, last record, statements, time in statements, error]
    spans: dict[Any, list[Any]] = {}
    for r in scope.records:
        txn = r.txn
        if txn is None:
            continue
        span = spans.get(txn)
        if span is None:
            spans[txn] = [r, r, 1, r.duration, r.error is not None]
        else:
            span[1] = r
            span[2] += 1
            span[3] += r.duration
            if r.error is not None:
                span[4] = True
    if not spans:
        return []
    cwd = os.getcwd()
    result = []
    for txn, (first, last, statements, busy, error) in spans.items():
        track = scope.txns.get(txn)
        end_seen = track is not None and track.end is not None
        end = track.end if track is not None and track.end is not None else None
        if end is None:
            end = last.start + last.duration
        duration = max(end - first.start, 0.0)
        if track is not None and track.outcome is not None:
            outcome = track.outcome
        elif (track is not None and track.pool_reset) or error:
            outcome = "rollback"
        else:
            outcome = "commit"
        result.append(
            Transaction(
                started=first.start - scope.start,
                duration=duration,
                idle=max(duration - busy, 0.0),
                statements=statements,
                outcome="rollback" if outcome == "rollback" else "commit",
                location=location(first, cwd),
                end_seen=end_seen,
                sql=first.shape.sql,
                fingerprint=first.shape.fingerprint,
            )
        )
    return result


def apply_allow_lists(findings: list[Finding], settings: Settings) -> list[Finding]:
    """Drop findings the user silenced by relationship, SQL pattern or call site."""
    if not (settings.allow_relationships or settings.allow_sql or settings.allow_locations):
        return findings
    return [f for f in findings if not _allowed(f, settings)]


def _allowed(finding: Finding, settings: Settings) -> bool:
    if finding.relationship and finding.relationship in settings.allow_relationships:
        return True
    if any(p.search(finding.sql) for p in settings.allow_sql):
        return True
    if finding.location and settings.allow_locations:
        path, _, function = finding.location.partition(" in ")
        candidates = (finding.location, path.rsplit(":", 1)[0], function)
        return any(fnmatchcase(c, p) for c in candidates for p in settings.allow_locations)
    return False
