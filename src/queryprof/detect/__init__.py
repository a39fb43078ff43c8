"""Detectors: pure functions from a closed scope's records to findings.

Each module holds one finding kind. They run once, when a scope closes, over the records the
per-statement path stored, so none of their cost lands on a statement.
"""

from __future__ import annotations

from dataclasses import replace

from queryprof._settings import Settings
from queryprof.detect import duplicates, long_transaction, n_plus_one, repeated_write, slow_query
from queryprof.detect._common import apply_allow_lists, transactions
from queryprof.findings import Finding
from queryprof.scope import Scope


def analyze(scope: Scope, settings: Settings) -> list[Finding]:
    """Every finding in a closed scope, after the allow lists; also fills scope.transactions."""
    records = scope.records
    if any(r.allowed is not None for r in records):
        records = [r for r in records if r.allowed is None]
    scope.transactions = transactions(scope)
    findings = [
        *n_plus_one.detect(records, settings),
        *duplicates.detect(records, settings),
        *repeated_write.detect(records, settings),
        *slow_query.detect(records, settings),
        *long_transaction.detect(scope, settings),
    ]
    return [replace(f, scope=scope.name) for f in apply_allow_lists(findings, settings)]
