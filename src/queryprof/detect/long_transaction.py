"""Long transaction: a transaction open at least ``long_transaction_threshold`` seconds.

Reported with where it began and how much of it was idle (no statement running): the usual
cause is slow work, such as an HTTP call, awaited inside ``session.begin()``.
"""

from __future__ import annotations

from queryprof._settings import Settings
from queryprof.findings import Finding, format_ms
from queryprof.scope import Scope


def detect(scope: Scope, settings: Settings) -> list[Finding]:
    findings = []
    for t in scope.transactions:
        if t.duration < settings.long_transaction_threshold:
            continue
        ended = f"ended in {t.outcome}" if t.end_seen else "end not seen, open at least this long"
        detail = f"{ended}; idle in transaction {format_ms(t.idle)}"
        findings.append(
            Finding(
                kind="long_transaction",
                count=t.statements,
                duration=t.duration,
                sql=t.sql,
                fingerprint=t.fingerprint,
                location=t.location,
                detail=detail,
                suggestion=(
                    "keep slow work (HTTP calls, sleeps, heavy computation) outside the "
                    "transaction: commit first or do it before session.begin()"
                ),
            )
        )
    return findings
