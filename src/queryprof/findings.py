"""What queryprof reports: findings, recorded statements and transactions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

FindingKind = Literal[
    "n_plus_one", "duplicate_query", "repeated_write", "slow_query", "long_transaction"
]

FINDING_KINDS: tuple[FindingKind, ...] = (
    "n_plus_one",
    "duplicate_query",
    "repeated_write",
    "slow_query",
    "long_transaction",
)

LABELS: dict[str, str] = {
    "n_plus_one": "N+1",
    "duplicate_query": "Duplicate query",
    "repeated_write": "Repeated write",
    "slow_query": "Slow query",
    "long_transaction": "Long transaction",
}


def format_ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.1f} ms" if ms < 10_000 else f"{seconds:.1f} s"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found in a scope, with where it comes from and how to fix it.

    ``sql`` is the normalized statement shape (no parameter values), ``fingerprint`` its
    16-hex-character hash, stable across processes. ``location`` is the application frame
    behind it (``"app/routes.py:42 in list_authors"``), ``relationship`` the ORM relationship
    whose lazy load caused it (``"Author.books"``) and ``suggestion`` the concrete fix.
    """

    kind: FindingKind
    count: int
    duration: float
    sql: str
    fingerprint: str
    location: str | None = None
    relationship: str | None = None
    suggestion: str | None = None
    plan: Any = None
    detail: str | None = None
    scope: str | None = None

    def __str__(self) -> str:
        return f"{LABELS[self.kind]}: {self.describe()}"

    def describe(self) -> str:
        """The finding without its kind label: count, statement, time, place, cause and fix."""
        from queryprof.fingerprint import shorten

        if self.kind == "long_transaction":
            head = f"{format_ms(self.duration)} from {self.location or 'an unknown place'}"
            parts = [head, f"{self.count} statements, the first {shorten(self.sql)}"]
        else:
            parts = [f"{self.count} x {shorten(self.sql)} ({format_ms(self.duration)})"]
            if self.location:
                parts[0] += f" from {self.location}"
        if self.detail:
            parts.append(self.detail)
        if self.relationship:
            parts.append(f"lazy load of {self.relationship}")
        if self.suggestion:
            parts.append(f"fix: {self.suggestion}")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (the ``extra`` of the log record, JSON reports)."""
        return {
            "kind": self.kind,
            "count": self.count,
            "duration": self.duration,
            "sql": self.sql,
            "fingerprint": self.fingerprint,
            "location": self.location,
            "relationship": self.relationship,
            "suggestion": self.suggestion,
            "plan": self.plan,
            "detail": self.detail,
            "scope": self.scope,
        }


@dataclass(frozen=True, slots=True)
class Query:
    """One statement sent to the database inside a scope.

    ``started`` is seconds since the scope opened. ``error`` names the exception class when
    the statement failed. ``parameters`` is None unless ``capture_parameters=True``.
    """

    sql: str
    fingerprint: str
    operation: str
    started: float
    duration: float
    rowcount: int
    executemany: bool
    location: str | None
    relationship: str | None
    error: str | None
    parameters: Any = None


@dataclass(frozen=True, slots=True)
class Transaction:
    """One database transaction seen in a scope.

    ``duration`` runs from its first statement to its end (commit, rollback or return of the
    connection to the pool); ``idle`` is the part of it during which no statement was running.
    ``outcome`` is ``"commit"`` or ``"rollback"``; ``end_seen`` is False when the end was not
    observed before the scope closed, so ``duration`` stops at its last statement.
    """

    started: float
    duration: float
    idle: float
    statements: int
    outcome: Literal["commit", "rollback"]
    location: str | None
    end_seen: bool
    sql: str
    fingerprint: str
