"""The databases and tables of tests/test_explain.py.

Each database (an SQLite file, the PostgreSQL server, the MariaDB server) gets one
50,000-row orders table, built in one INSERT ... SELECT the first time a test needs it and
dropped at the end of the module. Table names carry the process id so that two test runs
(the two virtualenvs, or xdist workers) never share one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backends import Backend
from conftest import require_server
from queryprof import Finding, Profiler, Scope

ROWS = 50_000
CUSTOMERS = 1_000
SUFFIX = f"{os.getpid():x}"
ORDERS = f"qpe_orders_{SUFFIX}"

# Each database's way to fill the orders table with ROWS rows in one statement.
_FILL = {
    "postgresql": (
        f"INSERT INTO {ORDERS} SELECT g, mod(g, {CUSTOMERS}), md5(g::text), g "
        f"FROM generate_series(1, {ROWS}) AS g"
    ),
    "mysql": (
        f"INSERT INTO {ORDERS} SELECT seq, MOD(seq, {CUSTOMERS}), MD5(seq), seq "
        f"FROM seq_1_to_{ROWS}"
    ),
    "sqlite": (
        f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) "
        f"INSERT INTO {ORDERS} SELECT i, i % {CUSTOMERS}, hex(randomblob(16)), i FROM n"
    ),
}
_ANALYZE = {
    "postgresql": f"ANALYZE {ORDERS}",
    "mysql": f"ANALYZE TABLE {ORDERS}",
    "sqlite": f"ANALYZE {ORDERS}",
}
# How each database's plan shows a full scan of the orders table.
FULL_SCAN = {
    "postgresql": f"Seq Scan on {ORDERS}",
    "mysql": f"-> {ORDERS}: ALL",
    "sqlite": f"SCAN {ORDERS}",
}


class Tables:
    """Builds the orders table in each database once; drops every table at the end."""

    def __init__(self, sqlite_file: str) -> None:
        self.sqlite_file = sqlite_file
        self._built: dict[str, str] = {}  # database -> sync URL

    def sync_url(self, backend: Backend) -> str:
        return backend.sync_url.format(path=self.sqlite_file)

    def url(self, backend: Backend) -> str:
        """``backend``'s URL, its orders table built."""
        require_server(backend.url)
        if backend.database not in self._built:
            sync_url = self.sync_url(backend)
            with self.admin(backend) as conn:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {ORDERS}")
                conn.exec_driver_sql(
                    f"CREATE TABLE {ORDERS} (id INTEGER PRIMARY KEY, customer_id INTEGER "
                    "NOT NULL, note VARCHAR(64) NOT NULL, amount INTEGER NOT NULL)"
                )
                conn.exec_driver_sql(_FILL[backend.database])
                conn.exec_driver_sql(_ANALYZE[backend.database])
            self._built[backend.database] = sync_url
        return backend.url.format(path=self.sqlite_file)

    @contextmanager
    def admin(self, backend: Backend) -> Iterator[Any]:
        """A committed connection through the sync driver, outside every profiler."""
        engine = create_engine(self.sync_url(backend))
        try:
            with engine.begin() as conn:
                yield conn
        finally:
            engine.dispose()

    def drop_all(self) -> None:
        for sync_url in self._built.values():
            engine = create_engine(sync_url)
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {ORDERS}")
            finally:
                engine.dispose()
        self._built.clear()


@dataclass
class Db:
    """One backend under test: its engine, and the profilers the test made on it."""

    backend: Backend
    engine: Engine | AsyncEngine
    tables: Tables
    profilers: list[Profiler] = field(default_factory=list)

    @property
    def database(self) -> str:
        return self.backend.database

    def profiler(self, **settings: Any) -> Profiler:
        """A profiler on this engine alone; every statement counts as a slow query."""
        options: dict[str, Any] = {"log_findings": False, "slow_query_threshold": 1e-6}
        profiler = Profiler(**{**options, **settings})
        profiler.instrument(self.engine)
        self.profilers.append(profiler)
        return profiler

    async def run(self, sql: str, parameters: Any = None) -> list[Any]:
        """Run one statement (a list of parameter sets: executemany) and commit; its rows."""
        if isinstance(self.engine, AsyncEngine):
            async with self.engine.begin() as conn:
                result = await conn.execute(text(sql), parameters or {})
                return list(result.all()) if result.returns_rows else []
        with self.engine.begin() as conn:
            result = conn.execute(text(sql), parameters or {})
            return list(result.all()) if result.returns_rows else []

    def admin(self) -> Any:
        return self.tables.admin(self.backend)

    async def close(self) -> None:
        for profiler in self.profilers:
            await profiler.flush(30)
            profiler.uninstrument()
        if isinstance(self.engine, AsyncEngine):
            await self.engine.dispose()
        else:
            self.engine.dispose()


def make_engine(backend: Backend, url: str, **options: Any) -> Engine | AsyncEngine:
    if backend.is_async:
        return create_async_engine(url, **options)
    return create_engine(url, **options)


def slow_findings(scope: Scope) -> list[Finding]:
    return [f for f in scope.findings if f.kind == "slow_query"]


def only_plan(scope: Scope) -> Any:
    """The plan of the scope's one slow query."""
    [finding] = slow_findings(scope)
    assert finding.plan is not None
    return finding.plan
