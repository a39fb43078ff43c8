"""Helpers the detectors share: grouping records, call sites, transactions, allow lists."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable
from fnmatch import fnmatchcase
from typing import TypeVar

from queryprof._settings import Settings
from queryprof.callsite import CallSite, describe
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
    sites: Counter[CallSite | None] = Counter(r.site for r in records)
    site, _ = sites.most_common(1)[0]
    return describe(site)


def table_of(sql: str) -> str | None:
    match = _TABLE.match(sql)
    return match.group(1) if match else None


def key_column(sql: str) -> str | None:
    """``"comments.id"`` for ``... WHERE comments.id = ?``: the column a loop filters on."""
    match = _KEY_COLUMN.search(sql)
    return match.group(1) if match else None


def fill_sites(records: list[Record]) -> list[Record]:
    """Give each record without a call site the most recent site of its statement shape.

    The per-statement path takes call sites only for the first runs of each shape in a
    scope; a loop that runs one shape a thousand times has the rest attributed here.
    """
    last: dict[str, CallSite] = {}
    filled = []
    for r in records:
        if r.site is not None:
            last[r.shape.fingerprint] = r.site
        elif r.shape.fingerprint in last:
            r = r._replace(site=last[r.shape.fingerprint])
        filled.append(r)
    return filled


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
                location=describe(first.site),
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
