"""SQLite: ``EXPLAIN QUERY PLAN`` through sqlite3 or aiosqlite.

It only plans, never runs the statement, opens no transaction and has no ANALYZE form, so
``explain_analyze`` does not apply. Its rows name the access path of each table (``SCAN t``,
``SEARCH t USING INDEX ix (a=?)``) but not the filter, so the filtered columns come from the
statement's WHERE clause, and a table's size from ``max(rowid)`` (one index lookup). Scans
of CTEs, views and subqueries get no hint: only a table takes an index.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

from sqlalchemy.engine import Connection

from queryprof.explain import _sql, hints
from queryprof.explain._driver import Request, dbapi_of, replay, run
from queryprof.explain.redact import mask_literals
from queryprof.findings import Plan

_SCAN: Final = re.compile(r"^SCAN (?:TABLE )?(\S+)(?: AS (\S+))?$")
_AUTOMATIC: Final = re.compile(
    r"^SEARCH (?:TABLE )?(\S+)(?: AS (\S+))? USING AUTOMATIC (?:PARTIAL )?(?:COVERING )?INDEX "
    r"\((.*)\)$"
)

Row = dict[str, Any]


def explain(connection: Connection, request: Request) -> Plan:
    dialect = connection.dialect
    dbapi = dbapi_of(connection)
    cursor = dbapi.cursor()
    try:
        replay(dialect, cursor, "EXPLAIN QUERY PLAN ", request)
        rows = [{"id": r[0], "parent": r[1], "detail": str(r[3])} for r in cursor.fetchall()]
        tables = _sql.tables_of(request.statement)
        sizes: dict[str, float | None] = {}
        for row in rows:
            scan = _SCAN.match(row["detail"]) or _AUTOMATIC.match(row["detail"])
            if scan:
                table = tables.get(scan.group(2) or scan.group(1), scan.group(1))
                if _is_table(dialect, cursor, table):
                    sizes[table] = _size(dialect, cursor, table)
    finally:
        cursor.close()
    found = _hints(rows, request, tables, sizes)
    if not request.capture_parameters:
        rows = [{**row, "detail": mask_literals(row["detail"])} for row in rows]
    return Plan("sqlite", raw=rows, text="\n".join(_tree(rows)), hints=found)


def _is_table(dialect: Any, cursor: Any, table: str) -> bool:
    """A table, not a CTE, a view or a subquery: only a table can take an index."""
    run(dialect, cursor, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = {}", table)
    return cursor.fetchone() is not None


def _size(dialect: Any, cursor: Any, table: str) -> float | None:
    quoted = '"' + table.replace('"', '""') + '"'
    try:
        run(dialect, cursor, f"SELECT max(rowid) FROM {quoted}")
        value = cursor.fetchone()[0]
        return float(value) if value is not None else 0.0
    except Exception:  # a WITHOUT ROWID table: its size stays unknown
        return None


def _hints(
    rows: list[Row], request: Request, tables: dict[str, str], sizes: dict[str, float | None]
) -> tuple[str, ...]:
    where = _sql.filter_text(request.statement, ("WHERE",))
    joins = _sql.filter_text(request.statement, ("WHERE", "ON"))
    single = len(set(tables.values())) <= 1
    scans, loops, automatic = [], [], []
    seen: dict[Any, int] = {}  # parent id -> loops met so far at that level
    for row in rows:
        level = seen[row["parent"]] = seen.get(row["parent"], 0) + 1
        scan = _SCAN.match(row["detail"])
        if scan:
            name = scan.group(2) or scan.group(1)
            table = tables.get(name, scan.group(1))
            if table not in sizes:
                continue  # not a table
            size = sizes[table]
            if size is not None and size < hints.LARGE_TABLE_ROWS:
                continue
            names = [name, table]
            if level > 1:  # an inner loop: scanned again for every row of the outer ones
                columns = _sql.condition_columns(joins, names, unqualified=single)
                loops.append(_inner_scan(table, columns, size))
            else:
                columns = _sql.condition_columns(where, names, unqualified=single)
                if columns:
                    scans.append(hints.full_scan("sqlite", "Full scan of", table, columns, size))
        auto = _AUTOMATIC.match(row["detail"])
        if auto:
            table = tables.get(auto.group(2) or auto.group(1), auto.group(1))
            if table not in sizes:
                continue  # an automatic index on a subquery or a view
            columns = re.findall(r"(\w+)[<>=]", auto.group(3))
            automatic.append(
                f"SQLite builds a temporary index on {table} ({', '.join(columns)}) for every "
                f"run of this query: consider {hints.create_index('sqlite', table, columns)}"
            )
    offset = hints.large_offset(
        request.statement, request.parameters, exact=request.capture_parameters
    )
    return hints.unique([*scans, *loops, *automatic, offset])


def _inner_scan(table: str, columns: list[str], size: float | None) -> str:
    scanned = f" ({hints.rows(size)})" if size is not None else ""
    head = f"Nested loop scans all of {table}{scanned} for every row of the outer table"
    if not columns:
        return f"{head}: an index on its join columns would make each lookup cheap"
    return f"{head}: consider {hints.create_index('sqlite', table, columns[:3])}"


def _tree(rows: list[Row]) -> Iterator[str]:
    depth: dict[Any, int] = {0: -1}
    for row in rows:
        level = depth.get(row["parent"], -1) + 1
        depth[row["id"]] = level
        yield f"{'  ' * level}{'-> ' if level else ''}{row['detail']}"
