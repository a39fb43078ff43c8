"""MySQL and MariaDB: ``EXPLAIN FORMAT=JSON`` through aiomysql or pymysql.

Inside a transaction that is always rolled back (``READ ONLY`` under ANALYZE). On MariaDB
the statement runs under ``SET STATEMENT max_statement_time=..., lock_wait_timeout=... FOR``,
which bounds it without touching the session, and ``explain_analyze`` uses ``ANALYZE
FORMAT=JSON`` (MariaDB's EXPLAIN ANALYZE, which runs the statement). MySQL's own EXPLAIN
ANALYZE has no JSON form before 8.3, so on MySQL the plan is always the plain, estimated one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any, Final

from sqlalchemy.engine import Connection

from queryprof.explain import _sql, hints
from queryprof.explain._driver import Request, dbapi_of, replay, run
from queryprof.explain.redact import mask_plan
from queryprof.findings import Plan

Node = dict[str, Any]

_FULL_SCAN: Final = ("ALL",)
_OPERATIONS: Final = (
    "ordering_operation",
    "grouping_operation",
    "duplicates_removal",
    "temporary_table",
    "filesort",
    "read_sorted_file",
    "materialized",
    "union_result",
)


def explain(connection: Connection, request: Request) -> Plan:
    dialect = connection.dialect
    mariadb = bool(getattr(dialect, "is_mariadb", False))
    analyze = request.analyze and mariadb
    prefix = "ANALYZE FORMAT=JSON " if analyze else "EXPLAIN FORMAT=JSON "
    if mariadb:
        limits = f"max_statement_time={request.timeout:.3f}, "
        limits += f"lock_wait_timeout={max(1, math.ceil(request.timeout))}"
        prefix = f"SET STATEMENT {limits} FOR {prefix}"
    dbapi = dbapi_of(connection)
    cursor = dbapi.cursor()
    try:
        # READ ONLY where the statement runs; MariaDB refuses even to plan a write in one.
        run(dialect, cursor, "START TRANSACTION READ ONLY" if analyze else "START TRANSACTION")
        replay(dialect, cursor, prefix, request)
        row = cursor.fetchone()
        if row is None:
            raise LookupError("EXPLAIN returned no row")
        raw = row[0]
    finally:
        try:
            cursor.close()
        finally:
            dbapi.rollback()
    plan = json.loads(raw)
    found = _hints(plan, request, analyze)
    shown = plan if request.capture_parameters else mask_plan(plan)
    return Plan(
        "mariadb" if mariadb else "mysql",
        raw=shown,
        text="\n".join(_tree(shown)),
        hints=found,
        analyzed=analyze,
    )


def _tables(value: Any) -> Iterator[Node]:
    """Every table access of the plan, in document order (the join order)."""
    if isinstance(value, dict):
        if "table_name" in value:
            yield value
        for child in value.values():
            yield from _tables(child)
    elif isinstance(value, list):
        for child in value:
            yield from _tables(child)


def _hints(plan: Node, request: Request, analyzed: bool) -> tuple[str, ...]:
    dialect = "mysql"  # MySQL and MariaDB word their statements alike
    aliases = _sql.tables_of(request.statement)
    derived = _sql.cte_names(request.statement)
    accesses = list(_tables(plan))
    scans, loops, stale = [], [], []
    for i, node in enumerate(accesses):
        name = str(node["table_name"])
        table = aliases.get(name, name)
        estimated = float(node.get("rows", node.get("rows_examined_per_scan", 0)) or 0)
        actual = float(node.get("r_rows", 0) or 0)
        condition = node.get("attached_condition")
        columns = (
            _sql.condition_columns(condition, [name, table], unqualified=len(accesses) == 1)
            if condition
            else []
        )
        if name.startswith("<") or table in derived:
            continue  # <derived2>, <subquery3>, a CTE: only a table takes an index
        if node.get("access_type") in _FULL_SCAN:
            size = max(estimated, actual)
            repeats = float(node.get("r_loops", 0) or 0)
            if i and analyzed and repeats >= hints.MANY_LOOPS:
                loops.append(hints.many_loops(dialect, table, columns, repeats))
            elif condition and size >= hints.LARGE_TABLE_ROWS:
                scans.append(hints.full_scan(dialect, "Full scan of", table, columns, size))
        if analyzed and "r_rows" in node:
            stale.append(hints.stale_statistics(dialect, table, estimated, actual))
    offset = hints.large_offset(
        request.statement, request.parameters, exact=request.capture_parameters
    )
    return hints.unique([*scans, *loops, *stale, offset])


def _tree(value: Any, depth: int = 0) -> Iterator[str]:
    indent = "  " * depth
    if isinstance(value, list):
        for child in value:
            yield from _tree(child, depth)
        return
    if not isinstance(value, dict):
        return
    if "table_name" in value:
        yield f"{indent}-> {_access(value)}"
        depth += 1
    elif "query_block" in value and isinstance(value["query_block"], dict):
        block = value["query_block"]
        yield f"{indent}query_block #{block.get('select_id', '?')}"
        yield from _tree({k: v for k, v in block.items() if k != "select_id"}, depth + 1)
        return
    for key, child in value.items():
        if key in _OPERATIONS and isinstance(child, dict):
            detail = child.get("sort_key") or ""
            yield f"{'  ' * depth}-> {key}{f' by {detail}' if detail else ''}"
            yield from _tree(child, depth + 1)
        elif isinstance(child, dict | list) and key != "query_optimization":
            yield from _tree(child, depth)


def _access(node: Node) -> str:
    parts = [f"{node['table_name']}: {node.get('access_type', '?')}"]
    if node.get("key"):
        parts.append(f"using {node['key']}")
    numbers = [f"rows={_count(node.get('rows', node.get('rows_examined_per_scan')))}"]
    if "r_rows" in node:
        numbers.append(f"actual={_count(node['r_rows'])} x{_count(node.get('r_loops', 1))}")
    parts.append(f"({', '.join(numbers)})")
    if node.get("attached_condition"):
        parts.append(f"condition: {node['attached_condition']}")
    if node.get("message"):
        parts.append(str(node["message"]))
    return " ".join(parts)


def _count(value: Any) -> str:
    try:
        return f"{round(float(value)):,}"
    except (TypeError, ValueError):
        return "?"
