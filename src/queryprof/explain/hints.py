"""Hints: one plain sentence per problem a plan shows, naming the table and the columns.

The dialect modules find the problems in their own plan format; the sentences, and the
thresholds that decide what is a problem, live here so that every database words them alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from queryprof.explain import _sql

LARGE_TABLE_ROWS: Final = 10_000
"""A sequential scan of a table this large, with a filter, deserves an index."""
MISESTIMATE_FACTOR: Final = 10
"""Estimated and actual rows this many times apart (under ANALYZE) mean stale statistics."""
MISESTIMATE_MIN_ROWS: Final = 100
"""...when at least one of them is this large: 1 row estimated, 12 found is noise."""
MANY_LOOPS: Final = 1_000
"""A nested loop running its inner scan this many times."""
LARGE_OFFSET: Final = 10_000
"""An OFFSET this large reads and discards that many rows for every page."""


def rows(count: float) -> str:
    return f"~{round(count):,} rows"


def create_index(dialect: str, table: str, columns: Sequence[str]) -> str:
    """``CREATE INDEX ON t (a, b)`` (PostgreSQL names it); others need a name: ``ix_t_a_b``."""
    listed = ", ".join(columns)
    if dialect == "postgresql":
        return f"CREATE INDEX ON {table} ({listed})"
    name = "_".join(("ix", table.rsplit(".", 1)[-1], *columns))[:64]
    return f"CREATE INDEX {name} ON {table} ({listed})"


def analyze_table(dialect: str, table: str) -> str:
    return f"ANALYZE TABLE {table}" if dialect in ("mysql", "mariadb") else f"ANALYZE {table}"


def full_scan(
    dialect: str, label: str, table: str, columns: Sequence[str], scanned: float | None
) -> str:
    """``Seq Scan on orders (~480,000 rows) filtered by customer_id: consider CREATE INDEX ON
    orders (customer_id)``."""
    size = f" ({rows(scanned)})" if scanned is not None else ""
    if not columns:
        return f"{label} {table}{size} with a filter: consider an index on the filtered columns"
    return (
        f"{label} {table}{size} filtered by {', '.join(columns)}: consider "
        f"{create_index(dialect, table, columns[:3])}"
    )


def many_loops(dialect: str, table: str, columns: Sequence[str], loops: float) -> str:
    head = f"Nested Loop scans {table} {round(loops):,} times"
    if not columns:
        return f"{head}: an index on its join columns would make each lookup cheap"
    return f"{head}: consider {create_index(dialect, table, columns[:3])} for the join"


def sort_spill(dialect: str, table: str | None, keys: Sequence[str], kilobytes: float) -> str:
    where = f" of {table}" if table else ""
    head = f"Sort{where} by {', '.join(keys) or 'its keys'} spilled {round(kilobytes):,} kB to disk"
    plain = [k for k in keys if _sql.tokens(k) and len(_sql.tokens(k)) == 1]
    if table and plain and len(plain) == len(keys):
        return f"{head}: consider {create_index(dialect, table, plain)} to read rows in order"
    return f"{head}: give the query more work_mem, or sort fewer rows"


def hash_spill(table: str | None, what: str, batches: float) -> str:
    where = f" of {table}" if table else ""
    return (
        f"{what}{where} spilled to disk in {round(batches):,} batches: give the query more "
        "work_mem, or filter the rows before they are hashed"
    )


def stale_statistics(dialect: str, table: str, estimated: float, actual: float) -> str | None:
    low, high = sorted((max(estimated, 0.0), max(actual, 0.0)))
    if high < MISESTIMATE_MIN_ROWS or high < MISESTIMATE_FACTOR * max(low, 1.0):
        return None
    factor = high / max(low, 1.0)
    return (
        f"Row estimate for {table} is off {factor:,.0f}x (estimated {round(estimated):,}, "
        f"actual {round(actual):,}): its statistics look stale, run {analyze_table(dialect, table)}"
    )


def large_offset(statement: str, parameters: Any, *, exact: bool) -> str | None:
    """The OFFSET hint, from the statement text (no plan shows the offset itself)."""
    offset = _sql.offset_of(statement, parameters)
    if offset is None or offset < LARGE_OFFSET:
        return None
    tables = list(dict.fromkeys(_sql.tables_of(statement).values()))
    table = f" on {tables[0]}" if tables else ""
    amount = f"{offset:,}" if exact else f"of {LARGE_OFFSET:,} or more"
    key = _sql.order_key(statement) or "key"
    return (
        f"OFFSET {amount}{table} reads and discards that many rows for every page: page by the "
        f"sort key instead (WHERE {key} > :last_seen ORDER BY {key} LIMIT n)"
    )


def unique(hints: Sequence[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(h for h in hints if h))
