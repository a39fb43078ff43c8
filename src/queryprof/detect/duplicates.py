"""Duplicate query: the same read with the same parameters, run more than once in a scope.

Parameters are compared by hash, never kept.
"""

from __future__ import annotations

from queryprof._settings import Settings
from queryprof.detect._common import common_site, group, total
from queryprof.findings import Finding
from queryprof.scope import Record


def detect(records: list[Record], settings: Settings) -> list[Finding]:
    reads = (
        r
        for r in records
        if r.shape.operation == "SELECT" and r.error is None and r.params_key is not None
    )
    findings = []
    for rs in group(reads, lambda r: (r.shape.fingerprint, r.params_key)).values():
        if len(rs) < settings.duplicate_threshold:
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
