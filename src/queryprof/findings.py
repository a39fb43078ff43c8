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


PlanStatus = Literal["ok", "error", "unavailable", "skipped"]


@dataclass(frozen=True, slots=True)
class Plan:
    """The database's plan for a slow query, and what to do about it (``finding.plan``).

    ``status`` is ``"ok"`` (the plan is in), ``"error"`` (EXPLAIN failed or timed out),
    ``"unavailable"`` (this dialect or statement cannot be explained) or ``"skipped"`` (not
    sampled, or the EXPLAIN queue was full); ``error`` says why when it is not ``"ok"``.
    ``raw`` is the database's own output (JSON on PostgreSQL and MySQL/MariaDB, the
    ``EXPLAIN QUERY PLAN`` rows on SQLite), ``text`` a compact tree for people and ``hints``
    plain sentences naming tables and columns, most useful first. Unless
    ``capture_parameters=True``, literal values in ``raw`` and ``text`` are masked as ``?``.
    """

    dialect: str
    status: PlanStatus = "ok"
    raw: Any = None
    text: str = ""
    hints: tuple[str, ...] = ()
    analyzed: bool = False
    error: str | None = None
    duration: float = 0.0

    def __str__(self) -> str:
        if self.status != "ok":
            return f"no plan ({self.status}): {self.error}"
        return self.hints[0] if self.hints else self.text.partition("\n")[0]

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-ready: ``raw`` is already JSON-like)."""
        return {
            "dialect": self.dialect,
            "status": self.status,
            "raw": self.raw,
            "text": self.text,
            "hints": list(self.hints),
            "analyzed": self.analyzed,
            "error": self.error,
            "duration": self.duration,
        }


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found in a scope, with where it comes from and how to fix it.

    ``sql`` is the normalized statement shape (no parameter values), ``fingerprint`` its
    16-hex-character hash, stable across processes. ``location`` is the application frame
    behind it (``"app/routes.py:42 in list_authors"``), ``relationship`` the ORM relationship
    whose lazy load caused it (``"Author.books"``) and ``suggestion`` the concrete fix.
    A slow query's ``plan`` is its EXPLAIN :class:`Plan`, filled in off the request path.
    """

    kind: FindingKind
    count: int
    duration: float
    sql: str
    fingerprint: str
    location: str | None = None
    relationship: str | None = None
    suggestion: str | None = None
    plan: Plan | None = None
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
        if isinstance(self.plan, Plan):
            if self.plan.hints:
                parts.append(f"plan: {self.plan.hints[0]}")
            elif self.plan.status == "error":
                parts.append(f"no plan: {self.plan.error}")
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
