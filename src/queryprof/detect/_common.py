"""Helpers the detectors share: grouping records, call sites, transactions, allow lists."""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable
from fnmatch import fnmatchcase
from types import CodeType
from typing import TypeVar

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
    sites: Counter[str | None] = Counter(location(r) for r in records)
    return sites.most_common(1)[0][0]


# (id(code), offset) -> (code, cwd, location): the code object is kept so its id cannot be
# reused, and the cwd because paths are shown relative to it.
_locations: dict[tuple[int, int], tuple[CodeType, str, str | None]] = {}


def location(record: Record) -> str | None:
    """``"app/routes.py:42 in list_authors"`` for a record's call site (memoized)."""
    site = record.site
    if site is None:
        return None
    key = (id(site[0]), site[1])  # hashing a code object hashes its contents: use its id
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
    result = []
    for txn, records in group(scope.records, lambda r: r.txn).items():
        if txn is None:
            continue
        first, last = records[0], records[-1]
        track = scope.txns.get(txn)
        end_seen = track is not None and track.end is not None
        end = track.end if track is not None and track.end is not None else None
        if end is None:
            end = last.start + last.duration
        duration = max(end - first.start, 0.0)
        if track is not None and track.outcome is not None:
            outcome = track.outcome
        elif (track is not None and track.pool_reset) or any(r.error for r in records):
            outcome = "rollback"
        else:
            outcome = "commit"
        result.append(
            Transaction(
                started=first.start - scope.start,
                duration=duration,
                idle=max(duration - total(records), 0.0),
                statements=len(records),
                outcome="rollback" if outcome == "rollback" else "commit",
                location=location(first),
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
