"""N+1: one statement shape run again and again from one call site, with other parameters.

Two origins: ORM lazy loads in a loop (the relationship is named and an eager loader
suggested) and explicit loops of ``session.get()`` / ``select().where(X.id == i)`` (one query
with ``IN`` suggested). The same shape with the same parameters each time is a duplicate
query instead; eager loads run once per batch and so never reach the threshold.
"""

from __future__ import annotations

from queryprof._settings import Settings
from queryprof.detect._common import by_shape_and_site, key_column, total
from queryprof.findings import Finding
from queryprof.orm import entity_of, loader_for, relationship_of
from queryprof.scope import Record


def detect(records: list[Record], settings: Settings) -> list[Finding]:
    threshold = settings.n_plus_one_threshold
    if len(records) < threshold:
        return []
    # Count the reads per shape first: call sites are described only for shapes that ran
    # often enough, and most scopes have none.
    reads = []
    counts: dict[str, int] = {}
    for r in records:
        shape = r.shape
        if shape.operation == "SELECT" and r.error is None and not r.executemany:
            reads.append(r)
            counts[shape.fingerprint] = counts.get(shape.fingerprint, 0) + 1
    frequent = {fingerprint for fingerprint, n in counts.items() if n >= threshold}
    if not frequent:
        return []
    candidates = [r for r in reads if r.shape.fingerprint in frequent]
    findings = []
    for (_, site), rs in by_shape_and_site(candidates).items():
        if len(rs) < threshold:
            continue
        if len({r.params_key for r in rs}) < 2:
            continue
        lazy = next((r for r in rs if r.lazy), None)
        relationship = relationship_of(lazy.compiled) if lazy is not None else None
        suggestion = loader_for(lazy.compiled) if lazy is not None else _one_query(rs[0])
        findings.append(
            Finding(
                kind="n_plus_one",
                count=len(rs),
                duration=total(rs),
                sql=rs[0].shape.sql,
                fingerprint=rs[0].shape.fingerprint,
                location=site,
                relationship=relationship,
                suggestion=suggestion,
            )
        )
    return findings


def _one_query(record: Record) -> str:
    column = key_column(record.shape.sql)
    entity = entity_of(record.compiled)
    if entity and column:
        attribute = column.rsplit(".", 1)[-1].strip('"`')
        return f"load them in one query: select({entity}).where({entity}.{attribute}.in_(ids))"
    if column:
        return f"load them in one query with WHERE {column} IN (...) instead of one per item"
    return "load them in one query instead of one per item"
