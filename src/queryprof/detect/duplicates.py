"""Duplicate query: the same read with the same parameters, run more than once in a scope.

Parameters are compared by hash, never kept.
"""

from __future__ import annotations

from queryprof._settings import Settings
from queryprof.detect._common import common_site, total
from queryprof.findings import Finding
from queryprof.scope import Record


def detect(records: list[Record], settings: Settings) -> list[Finding]:
    threshold = settings.duplicate_threshold
    if len(records) < threshold:
        return []
    groups: dict[tuple[str, int], list[Record]] = {}
    repeated = False
    for r in records:
        shape = r.shape
        if shape.operation == "SELECT" and r.error is None and r.params_key is not None:
            key = (shape.fingerprint, r.params_key)
            found = groups.get(key)
            if found is None:
                groups[key] = [r]
            else:
                found.append(r)
                repeated = True
    if not repeated:
        return []
    findings = []
    for rs in groups.values():
        if len(rs) < threshold:
            continue
        findings.append(
            Finding(
                kind="duplicate_query",
                count=len(rs),
                duration=total(rs),
                sql=rs[0].shape.sql,
                fingerprint=rs[0].shape.fingerprint,
                location=common_site(rs),
                suggestion="run it once and reuse the result (pass the loaded rows along)",
            )
        )
    return findings
