"""Slow query: a statement that took at least ``slow_query_threshold`` seconds.

One finding per statement shape; ``plan`` is filled later by the EXPLAIN worker.
"""

from __future__ import annotations

import os

from queryprof._settings import Settings
from queryprof.detect._common import group, location, total
from queryprof.findings import Finding, format_ms
from queryprof.scope import Record


def detect(records: list[Record], settings: Settings) -> list[Finding]:
    threshold = settings.slow_query_threshold
    slow = [r for r in records if r.duration >= threshold]
    if not slow:
        return []
    cwd = os.getcwd()
    findings = []
    for rs in group(slow, lambda r: r.shape.fingerprint).values():
        slowest = max(rs, key=lambda r: r.duration)
        findings.append(
            Finding(
                kind="slow_query",
                count=len(rs),
                duration=total(rs),
                sql=slowest.shape.sql,
                fingerprint=slowest.shape.fingerprint,
                location=location(slowest, cwd),
                detail=f"slowest {format_ms(slowest.duration)}" if len(rs) > 1 else None,
            )
        )
    return findings
