"""PostgreSQL: ``EXPLAIN (FORMAT JSON)`` through asyncpg or psycopg.

Always inside a read-only transaction that is rolled back, under ``SET LOCAL
statement_timeout``: plain EXPLAIN only plans, but planning waits for locks, and
``EXPLAIN ANALYZE`` runs the statement (queryprof asks for it only for read-only SELECTs).
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

_DETAILS: Final = (
    "Index Cond",
    "Recheck Cond",
    "Filter",
    "Join Filter",
    "Hash Cond",
    "Merge Cond",
    "One-Time Filter",
    "Sort Key",
    "Group Key",
    "Sort Method",
)
_SIZES: Final = """
    SELECT c.relname, GREATEST(c.reltuples, COALESCE(s.n_live_tup, 0))
    FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_stat_user_tables s ON s.relid = c.oid
    WHERE c.relname::text = ANY({}) AND c.relkind IN ('r', 'p', 'm')
      AND pg_catalog.pg_table_is_visible(c.oid)
"""

Node = dict[str, Any]


def explain(connection: Connection, request: Request) -> Plan:
    dialect = connection.dialect
    dbapi = dbapi_of(connection)
    cursor = dbapi.cursor()
    try:
        run(dialect, cursor, "SET TRANSACTION READ ONLY")
        run(dialect, cursor, f"SET LOCAL statement_timeout = {math.ceil(request.timeout * 1000)}")
        options = "ANALYZE, BUFFERS, FORMAT JSON" if request.analyze else "FORMAT JSON"
        replay(dialect, cursor, f"EXPLAIN ({options}) ", request)
        raw: Any = _first(cursor)
        raw = json.loads(raw) if isinstance(raw, str | bytes) else raw
        scanned = [n["Relation Name"] for n, _ in _walk(raw[0]["Plan"]) if _filtered_scan(n)]
        sizes: dict[str, float] = {}
        if scanned:
            run(dialect, cursor, _SIZES, sorted(set(scanned)))
            sizes = {str(name): float(size) for name, size in cursor.fetchall()}
    finally:
        try:
            cursor.close()
        finally:
            dbapi.rollback()
    found = _hints(raw[0]["Plan"], request, sizes)
    shown = raw if request.capture_parameters else mask_plan(raw)
    return Plan(
        "postgresql",
        raw=shown,
        text="\n".join(_tree(shown[0]["Plan"])),
        hints=found,
        analyzed=request.analyze,
    )


def _first(cursor: Any) -> Any:
    row = cursor.fetchone()
    if row is None:
        raise LookupError("EXPLAIN returned no row")
    return row[0]


def _walk(node: Node, parent: Node | None = None) -> Iterator[tuple[Node, Node | None]]:
    yield node, parent
    for child in node.get("Plans", ()):
        yield from _walk(child, node)


def _filtered_scan(node: Node) -> bool:
    return node.get("Node Type") == "Seq Scan" and "Relation Name" in node and "Filter" in node


def _relation(node: Node) -> Node | None:
    """The first scanned relation at or below ``node``."""
    return next((n for n, _ in _walk(node) if "Relation Name" in n), None)


def _name(node: Node | None) -> str | None:
    return None if node is None or "Relation Name" not in node else str(node["Relation Name"])


def _hints(root: Node, request: Request, sizes: dict[str, float]) -> tuple[str, ...]:
    scans, loops, spills, stale = [], [], [], []
    seen_stale: set[str] = set()
    for node, _ in _walk(root):
        kind = node.get("Node Type")
        table = _name(node)
        if table is not None and _filtered_scan(node):
            per_loop = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
            size = max(sizes.get(table, 0.0), float(per_loop))
            if size >= hints.LARGE_TABLE_ROWS:
                columns = _sql.condition_columns(
                    node["Filter"], [table, node.get("Alias", table)], unqualified=True
                )
                scans.append(hints.full_scan("postgresql", "Seq Scan on", table, columns, size))
        elif kind == "Nested Loop" and len(node.get("Plans", ())) == 2:
            loops.append(_nested_loop(node, request.analyze))
        elif kind == "Sort" and node.get("Sort Space Type") == "Disk":
            below = _relation(node)
            spills.append(
                hints.sort_spill(
                    "postgresql",
                    _name(below),
                    [_bare(k, below) for k in node.get("Sort Key", ())],
                    node.get("Sort Space Used", 0),
                )
            )
        elif kind == "Hash" and node.get("Hash Batches", 1) > 1:
            below = _relation(node)
            spills.append(hints.hash_spill(_name(below), "Hash", node["Hash Batches"]))
        elif kind == "Aggregate" and node.get("Disk Usage", 0) > 0:
            below = _relation(node)
            batches = node.get("HashAgg Batches", 2)
            spills.append(hints.hash_spill(_name(below), "Hash aggregate", batches))
        if table and request.analyze and "Actual Rows" in node and table not in seen_stale:
            hint = hints.stale_statistics(
                "postgresql", table, node.get("Plan Rows", 0), node["Actual Rows"]
            )
            if hint:
                seen_stale.add(table)
                stale.append(hint)
    offset = hints.large_offset(
        request.statement, request.parameters, exact=request.capture_parameters
    )
    return hints.unique([*scans, *loops, *spills, *stale, offset])


def _nested_loop(node: Node, analyzed: bool) -> str | None:
    outer, inner = node["Plans"]
    scan = inner
    while scan.get("Node Type") in ("Materialize", "Memoize") and scan.get("Plans"):
        scan = scan["Plans"][0]
    if scan.get("Node Type") != "Seq Scan" or "Relation Name" not in scan:
        return None  # an index lookup per outer row is what a nested loop is for
    count = inner.get("Actual Loops", 0) if analyzed else outer.get("Plan Rows", 0)
    if count < hints.MANY_LOOPS:
        return None
    table = scan["Relation Name"]
    names = [table, scan.get("Alias", table)]
    conditions = " AND ".join(f"({c})" for c in (node.get("Join Filter"), scan.get("Filter")) if c)
    columns = _sql.condition_columns(conditions, names, unqualified=False)
    columns = columns or _sql.condition_columns(scan.get("Filter", ""), names, unqualified=True)
    return hints.many_loops("postgresql", table, columns, count)


def _bare(key: str, relation: Node | None) -> str:
    """``note`` for the sort key ``a.note`` when ``a`` is the relation below the sort."""
    if relation is not None:
        for prefix in (relation.get("Alias"), relation.get("Relation Name")):
            if prefix and key.startswith(f"{prefix}."):
                return key[len(prefix) + 1 :]
    return key


def _tree(node: Node, depth: int = 0) -> Iterator[str]:
    label = ("Parallel " if node.get("Parallel Aware") else "") + str(node.get("Node Type", "?"))
    if "Relation Name" in node:
        alias = node.get("Alias")
        label += f" on {node['Relation Name']}" + (
            f" {alias}" if alias and alias != node["Relation Name"] else ""
        )
    if "Index Name" in node:
        label += f" using {node['Index Name']}"
    numbers = [f"rows={_count(node.get('Plan Rows'))}"]
    if "Actual Rows" in node:
        loops = node.get("Actual Loops", 1)
        repeat = f" x{loops:,}" if loops != 1 else ""
        numbers.append(f"actual={_count(node['Actual Rows'])}{repeat}")
        numbers.append(f"{node.get('Actual Total Time', 0):.1f} ms")
    indent = "  " * depth
    yield f"{indent}{'-> ' if depth else ''}{label} ({', '.join(numbers)})"
    for key in _DETAILS:
        if key in node:
            value = node[key]
            shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            if key == "Sort Method" and node.get("Sort Space Type"):
                shown += f", {node['Sort Space Type']} {node.get('Sort Space Used', 0)} kB"
            yield f"{indent}     {key}: {shown}"
    for child in node.get("Plans", ()):
        yield from _tree(child, depth + 1)


def _count(value: Any) -> str:
    return f"{round(value):,}" if isinstance(value, int | float) else "?"
