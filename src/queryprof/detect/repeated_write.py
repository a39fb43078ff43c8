"""Repeated write: one single-row INSERT/UPDATE/DELETE shape run again and again from one
call site, where one batched statement would do."""

from __future__ import annotations

from queryprof._settings import Settings
from queryprof.detect._common import by_shape_and_site, table_of, total
from queryprof.findings import Finding
from queryprof.orm import entity_of_table
from queryprof.scope import Record

_WRITES = ("INSERT", "UPDATE", "DELETE")


def detect(records: list[Record], settings: Settings) -> list[Finding]:
    threshold = settings.repeated_write_threshold
    if len(records) < threshold:
        return []
    writes = []
    counts: dict[str, int] = {}
    for r in records:
        shape = r.shape
        if shape.operation in _WRITES and r.error is None and not r.executemany:
            writes.append(r)
            counts[shape.fingerprint] = counts.get(shape.fingerprint, 0) + 1
    frequent = {fingerprint for fingerprint, n in counts.items() if n >= threshold}
    if not frequent:
        return []
    candidates = [r for r in writes if r.shape.fingerprint in frequent]
    findings = []
    for (_, site), rs in by_shape_and_site(candidates).items():
        if len(rs) < threshold:
            continue
        findings.append(
            Finding(
                kind="repeated_write",
                count=len(rs),
                duration=total(rs),
                sql=rs[0].shape.sql,
                fingerprint=rs[0].shape.fingerprint,
                location=site,
                suggestion=_batched(rs[0]),
            )
        )
    return findings


def _batched(record: Record) -> str:
    table = table_of(record.shape.sql) or "the table"
    entity = entity_of_table(record.compiled) or table
    if record.shape.operation == "INSERT":
        return (
            f"insert the rows in one statement: session.execute(insert({entity}), [row, ...]) "
            "or session.add_all(rows) and one flush"
        )
    if record.shape.operation == "UPDATE":
        return (
            f"update in one round trip: session.execute(update({entity}), [{{'id': ..., ...}}, "
            f"...]) or one UPDATE {table} ... WHERE id IN (...)"
        )
    return f"delete in one statement: delete({entity}).where({entity}.id.in_(ids))"
