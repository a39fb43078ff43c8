"""EXPLAIN plans of slow queries, on real databases: what the plan and its hints say, that
obtaining them never changes data, hangs or leaks a value, and that they stay off the request
path under load.

The scenario tests run on each backend (the backend is in the test id): sqlite+pysqlite,
postgresql+psycopg and mysql+pymysql (sync engines, EXPLAIN in a worker thread) and
sqlite+aiosqlite, postgresql+asyncpg and mysql+aiomysql (async engines, EXPLAIN as a task on
the event loop). Every statement a test runs counts as a slow query (threshold 1 us).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, bindparam, event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from backends import (
    ASYNC_BACKENDS,
    MYSQL_ASYNC,
    MYSQL_SYNC,
    PG_ASYNC,
    PG_SYNC,
    SQLITE_SYNC,
    SYNC_BACKENDS,
    Backend,
)
from explain_support import (
    CUSTOMERS,
    FULL_SCAN,
    ORDERS,
    SUFFIX,
    Db,
    Tables,
    make_engine,
    only_plan,
)
from queryprof import Profiler, QueryProfilerMiddleware, Scope
from queryprof.explain import _sql, worker
from queryprof.explain.redact import describe_error, mask_literals, mask_plan
from queryprof.findings import Plan

BACKENDS = (*SYNC_BACKENDS, *ASYNC_BACKENDS)
SERVERS = (PG_SYNC, PG_ASYNC, MYSQL_SYNC, MYSQL_ASYNC)
SECRET = "s3cr3t-hunter2"
SECRET_NUMBER = 7654321


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tables]:
    tables = Tables(str(tmp_path_factory.mktemp("queryprof-explain") / "explain.sqlite"))
    yield tables
    tables.drop_all()


async def _db(backend: Backend, tables: Tables, **options: Any) -> Db:
    engine = make_engine(backend, tables.url(backend), **options)
    db = Db(backend, engine, tables)
    await db.run("SELECT 1")  # the dialect's first-connect queries, outside any scope
    return db


@pytest.fixture(params=BACKENDS, ids=str)
async def db(request: pytest.FixtureRequest, tables: Tables) -> AsyncIterator[Db]:
    db = await _db(request.param, tables)
    yield db
    await db.close()


@pytest.fixture(params=SERVERS, ids=str)
async def server_db(request: pytest.FixtureRequest, tables: Tables) -> AsyncIterator[Db]:
    db = await _db(request.param, tables)
    yield db
    await db.close()


@pytest.fixture(params=ASYNC_BACKENDS, ids=str)
async def async_db(request: pytest.FixtureRequest, tables: Tables) -> AsyncIterator[Db]:
    db = await _db(request.param, tables)
    yield db
    await db.close()


@pytest.fixture
async def pg(tables: Tables) -> AsyncIterator[Db]:
    db = await _db(PG_SYNC, tables)
    yield db
    await db.close()


@pytest.fixture
def scratch(db: Db) -> Iterator[str]:
    """A 1,000-row table of the test's own, for statements that write."""
    name = f"qpe_scratch_{SUFFIX}"
    with db.admin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        conn.exec_driver_sql(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, amount INTEGER)")
        conn.execute(
            text(f"INSERT INTO {name} (id, amount) VALUES (:id, :amount)"),
            [{"id": i, "amount": 10} for i in range(1, 1001)],
        )
    yield name
    with db.admin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


async def explained(db: Db, sql: str, parameters: Any = None, **settings: Any) -> Plan:
    """Run ``sql`` in a scope of a new profiler; the plan of its slow-query finding."""
    profiler = db.profiler(**settings)
    async with profiler.scope("test") as scope:
        await db.run(sql, parameters)
    assert await profiler.flush(30)
    return only_plan(scope)


# -- the plan and its hints ------------------------------------------------------------------


async def test_a_scan_by_an_unindexed_column_gets_the_plan_and_an_index_hint(db: Db) -> None:
    plan = await explained(db, f"SELECT id, note FROM {ORDERS} WHERE customer_id = :c", {"c": 42})

    assert plan.status == "ok", plan.error
    assert FULL_SCAN[db.database] in plan.text
    assert plan.hints, plan.text
    hint = plan.hints[0]
    assert "customer_id" in hint
    assert "CREATE INDEX" in hint
    assert f"ON {ORDERS} (customer_id)" in hint
    assert "rows" in hint or db.database == "sqlite"
    json.dumps(plan.raw)  # the database's own plan, ready for tools
    assert plan.duration > 0


async def test_after_create_index_the_hint_is_gone(db: Db) -> None:
    with db.admin() as conn:
        conn.exec_driver_sql(f"CREATE INDEX ix_qpe_customer_{SUFFIX} ON {ORDERS} (customer_id)")
    try:
        sql = f"SELECT id, note FROM {ORDERS} WHERE customer_id = :c"
        plan = await explained(db, sql, {"c": 42})
    finally:
        with db.admin() as conn:
            drop = f"DROP INDEX ix_qpe_customer_{SUFFIX}"
            conn.exec_driver_sql(drop + (f" ON {ORDERS}" if db.database == "mysql" else ""))

    assert plan.status == "ok", plan.error
    assert f"ix_qpe_customer_{SUFFIX}" in plan.text
    assert FULL_SCAN[db.database] not in plan.text
    assert plan.hints == ()


async def test_a_primary_key_lookup_has_no_hint(db: Db) -> None:
    plan = await explained(db, f"SELECT note FROM {ORDERS} WHERE id = :id", {"id": 7})

    assert plan.status == "ok", plan.error
    assert plan.hints == ()


async def test_a_large_offset_gets_a_keyset_pagination_hint(db: Db) -> None:
    literal = f"SELECT id FROM {ORDERS} ORDER BY id LIMIT 10 OFFSET 40000"
    bound = f"SELECT id FROM {ORDERS} ORDER BY id LIMIT :size OFFSET :skip"

    plan = await explained(db, literal)
    exact = await explained(db, bound, {"size": 10, "skip": 40000}, capture_parameters=True)

    assert any("OFFSET of 10,000 or more" in h and "WHERE id > :last_seen" in h for h in plan.hints)
    assert any(f"OFFSET 40,000 on {ORDERS}" in h for h in exact.hints)


async def test_a_scan_of_a_cte_or_subquery_gets_no_index_hint(db: Db) -> None:
    sql = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) "
        "SELECT count(*) FROM n WHERE i > 5"
    )
    plan = await explained(db, sql)

    assert plan.status == "ok", plan.error
    assert not any("CREATE INDEX" in h for h in plan.hints), plan.hints


async def test_the_log_line_names_the_top_hint(db: Db, caplog: pytest.LogCaptureFixture) -> None:
    profiler = db.profiler(log_findings=True)
    with caplog.at_level(logging.WARNING, logger="queryprof"):
        async with profiler.scope("GET /orders"):
            await db.run(f"SELECT id FROM {ORDERS} WHERE customer_id = :c", {"c": 3})
        await profiler.flush(30)

    [record] = [r for r in caplog.records if getattr(r, "kind", None) == "slow_query"]
    message = record.getMessage()
    assert message.startswith("Slow query in GET /orders: ")
    assert "; plan: " in message
    assert f"ON {ORDERS} (customer_id)" in message
    assert isinstance(record.plan, Plan)
    assert record.plan.status == "ok"


async def test_slow_queries_are_logged_after_their_plan_and_other_findings_at_once(
    async_db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    profiler = async_db.profiler(log_findings=True)
    sql = f"SELECT note FROM {ORDERS} WHERE id = :id"
    with caplog.at_level(logging.WARNING, logger="queryprof"):
        async with profiler.scope("GET /twice"):
            await async_db.run(sql, {"id": 1})
            await async_db.run(sql, {"id": 1})
        at_close = [r.kind for r in caplog.records]
        await profiler.flush(30)
        after_flush = [r.kind for r in caplog.records]

    assert at_close == ["duplicate_query"]  # the plan is obtained on this loop: not yet
    assert after_flush == ["duplicate_query", "slow_query"]
    assert caplog.records[-1].plan.status == "ok"


async def test_explain_statements_count_in_no_scope(db: Db) -> None:
    profiler = db.profiler()
    everything = profiler.scope("the whole process", process_wide=True).open()
    try:
        async with profiler.scope("request") as request:
            for customer in (1, 2, 3):
                await db.run(f"SELECT id FROM {ORDERS} WHERE customer_id = :c", {"c": customer})
        assert await profiler.flush(30)
        assert profiler.explainer is not None
        assert profiler.explainer.stats()["explained"] == 1
    finally:
        everything.close()

    assert request.query_count == 3
    assert everything.query_count == 3
    assert only_plan(request).status == "ok"


def test_a_sync_scope_outside_any_event_loop_gets_its_plan(tables: Tables) -> None:
    engine = make_engine(SQLITE_SYNC, tables.url(SQLITE_SYNC))
    profiler = Profiler(log_findings=False, slow_query_threshold=1e-6)
    profiler.instrument(engine)
    try:
        with profiler.scope("job") as scope, engine.connect() as conn:
            conn.execute(text(f"SELECT id FROM {ORDERS} WHERE customer_id = 5")).all()
        assert profiler.flush_sync(30)
    finally:
        profiler.uninstrument()
        engine.dispose()

    assert f"ON {ORDERS} (customer_id)" in only_plan(scope).hints[0]


# -- PostgreSQL's other hints (ANALYZE, spills, loops) ----------------------------------------


async def test_a_sort_spilling_to_disk_is_named(tables: Tables) -> None:
    db = await _db(PG_SYNC, tables, connect_args={"options": "-c work_mem=64kB"})
    try:
        sql = f"SELECT id, note FROM {ORDERS} ORDER BY note"
        plan = await explained(db, sql, explain_analyze=True)
    finally:
        await db.close()

    assert plan.analyzed
    assert "actual=" in plan.text
    assert any(
        h.startswith(f"Sort of {ORDERS} by note spilled") and f"ON {ORDERS} (note)" in h
        for h in plan.hints
    ), plan.hints


async def test_a_hash_spilling_to_disk_is_named(tables: Tables) -> None:
    db = await _db(PG_SYNC, tables, connect_args={"options": "-c work_mem=64kB"})
    try:
        sql = f"SELECT count(*) FROM {ORDERS} a JOIN {ORDERS} b ON b.note = a.note"
        plan = await explained(db, sql, explain_analyze=True)
    finally:
        await db.close()

    assert any(h.startswith(f"Hash of {ORDERS} spilled to disk in") for h in plan.hints)


async def test_a_nested_loop_rescanning_a_table_is_named(tables: Tables) -> None:
    options = "-c enable_hashjoin=off -c enable_mergejoin=off"
    db = await _db(PG_SYNC, tables, connect_args={"options": options})
    try:
        sql = (
            f"SELECT count(*) FROM {ORDERS} a JOIN {ORDERS} b ON b.customer_id = a.customer_id "
            "WHERE a.amount <= 1500 AND b.amount <= 1200"
        )
        plan = await explained(db, sql)
    finally:
        await db.close()

    assert "Nested Loop" in plan.text
    assert any(
        h.startswith(f"Nested Loop scans {ORDERS} ") and f"ON {ORDERS} (customer_id)" in h
        for h in plan.hints
    ), plan.hints


async def test_stale_statistics_are_named_under_analyze(pg: Db) -> None:
    stale = f"qpe_stale_{SUFFIX}"
    with pg.admin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {stale}")
        conn.exec_driver_sql(
            f"CREATE TABLE {stale} (id INTEGER, customer_id INTEGER) "
            "WITH (autovacuum_enabled = false)"
        )
        conn.exec_driver_sql(f"INSERT INTO {stale} SELECT g, g FROM generate_series(1, 100) g")
        conn.exec_driver_sql(f"ANALYZE {stale}")  # 100 customers, one row each...
        conn.exec_driver_sql(  # ...then 20,000 rows of customer 7, never analyzed
            f"INSERT INTO {stale} SELECT g, 7 FROM generate_series(101, 20100) g"
        )
    try:
        sql = f"SELECT id FROM {stale} WHERE customer_id = :c"
        plan = await explained(pg, sql, {"c": 7}, explain_analyze=True)
    finally:
        with pg.admin() as conn:
            conn.exec_driver_sql(f"DROP TABLE {stale}")

    assert any(
        h.startswith(f"Row estimate for {stale} is off") and h.endswith(f"run ANALYZE {stale}")
        for h in plan.hints
    ), plan.hints


# -- safety ----------------------------------------------------------------------------------


async def test_a_slow_delete_under_explain_analyze_deletes_once(db: Db, scratch: str) -> None:
    plan = await explained(db, f"DELETE FROM {scratch} WHERE id <= 100", explain_analyze=True)

    assert plan.status == "ok", plan.error
    assert not plan.analyzed  # a DELETE is only ever planned
    with db.admin() as conn:
        assert conn.exec_driver_sql(f"SELECT count(*) FROM {scratch}").scalar() == 900


async def test_a_slow_update_under_explain_analyze_updates_once(db: Db, scratch: str) -> None:
    sql = f"UPDATE {scratch} SET amount = amount + 1 WHERE id <= 100"
    plan = await explained(db, sql, explain_analyze=True)

    assert plan.status == "ok", plan.error
    assert not plan.analyzed
    with db.admin() as conn:
        assert conn.exec_driver_sql(f"SELECT sum(amount) FROM {scratch}").scalar() == 10_100


async def test_a_slow_executemany_is_explained_with_its_first_parameters(
    db: Db, scratch: str
) -> None:
    sql = f"UPDATE {scratch} SET amount = amount + 1 WHERE id = :id"
    plan = await explained(db, sql, [{"id": i} for i in range(1, 11)], explain_analyze=True)

    assert plan.status == "ok", plan.error
    with db.admin() as conn:
        assert conn.exec_driver_sql(f"SELECT sum(amount) FROM {scratch}").scalar() == 10_010


async def test_a_select_that_writes_through_a_function_is_not_written_twice(pg: Db) -> None:
    log, touch = f"qpe_touched_{SUFFIX}", f"qpe_touch_{SUFFIX}"
    with pg.admin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {log}")
        conn.exec_driver_sql(f"CREATE TABLE {log} (at TIMESTAMPTZ)")
        conn.exec_driver_sql(
            f"CREATE OR REPLACE FUNCTION {touch}() RETURNS INTEGER LANGUAGE sql AS "
            f"'INSERT INTO {log} VALUES (now()) RETURNING 1'"
        )
    try:
        plan = await explained(pg, f"SELECT {touch}()", explain_analyze=True)
        with pg.admin() as conn:
            rows = conn.exec_driver_sql(f"SELECT count(*) FROM {log}").scalar()
    finally:
        with pg.admin() as conn:
            conn.exec_driver_sql(f"DROP FUNCTION {touch}()")
            conn.exec_driver_sql(f"DROP TABLE {log}")

    assert rows == 1
    assert plan.status == "error"
    assert "read-only transaction" in (plan.error or "")


@pytest.mark.parametrize("backend", SERVERS, ids=str)
async def test_explain_analyze_of_a_select_leaves_no_transaction_open(
    backend: Backend, tables: Tables
) -> None:
    postgres = backend.database == "postgresql"
    engine = make_engine(backend, tables.url(backend))
    sessions: list[int] = []  # the server's id of every connection the engine opens

    @event.listens_for(getattr(engine, "sync_engine", engine), "connect")
    def remember(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT pg_backend_pid()" if postgres else "SELECT CONNECTION_ID()")
        sessions.append(int(cursor.fetchone()[0]))
        cursor.close()

    db = Db(backend, engine, tables)
    open_transactions = (
        "SELECT count(*) FROM pg_stat_activity WHERE pid IN :ids AND state <> 'idle'"
        if postgres
        else "SELECT count(*) FROM information_schema.innodb_trx WHERE trx_mysql_thread_id IN :ids"
    )
    try:
        await db.run("SELECT 1")
        sql = f"SELECT count(*) FROM {ORDERS} WHERE customer_id = :c"
        plan = await explained(db, sql, {"c": 9}, explain_analyze=True)
        with tables.admin(backend) as conn:
            check = text(open_transactions).bindparams(bindparam("ids", expanding=True))
            still_open = conn.execute(check, {"ids": sessions}).scalar()
    finally:
        await db.close()

    assert plan.status == "ok", plan.error
    assert plan.analyzed
    assert "actual=" in plan.text
    assert sessions  # the pooled connection(s) the application and the EXPLAIN used
    assert still_open == 0


async def test_a_sleeping_explain_analyze_is_cut_by_the_timeout(server_db: Db) -> None:
    sleep = "pg_sleep" if server_db.database == "postgresql" else "SLEEP"
    started = time.monotonic()
    plan = await explained(
        server_db, f"SELECT {sleep}(1.5)", explain_analyze=True, explain_timeout=0.3
    )
    elapsed = time.monotonic() - started  # the statement itself, then its EXPLAIN

    assert plan.status == "error"
    assert plan.error == "timed out after 0.3 s"
    assert plan.duration < 1.0
    assert elapsed < 1.5 + 1.0
    assert server_db.profilers[0].explainer.stats()["timed_out"] == 1


async def test_a_failing_explain_becomes_a_plan_error(pg: Db) -> None:
    # A temporary table lives in one connection: the EXPLAIN, on another, cannot see it.
    profiler = pg.profiler()
    assert isinstance(pg.engine, Engine)
    with pg.engine.connect() as conn:
        conn.exec_driver_sql("CREATE TEMPORARY TABLE qpe_only_here (id INTEGER)")
        async with profiler.scope("temp") as scope:
            conn.execute(text("SELECT id FROM qpe_only_here WHERE id = :id"), {"id": SECRET_NUMBER})
        conn.rollback()
    assert await profiler.flush(30)

    plan = only_plan(scope)
    assert plan.status == "error"
    assert plan.error.startswith("UndefinedTable: relation ? does not exist")
    assert profiler.explainer.stats()["failed"] == 1


async def test_a_connection_failure_becomes_a_plan_error(tables: Tables) -> None:
    # One pooled connection, held by the application while its plan is asked for.
    db = await _db(PG_SYNC, tables, pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        profiler = db.profiler()
        with db.engine.connect() as conn:
            async with profiler.scope("held") as scope:
                conn.execute(text(f"SELECT id FROM {ORDERS} WHERE customer_id = 1")).all()
            assert await profiler.flush(30)
        plan = only_plan(scope)
    finally:
        await db.close()

    assert plan.status == "error"
    assert plan.error.startswith("TimeoutError: QueuePool limit")


async def test_a_statement_that_cannot_be_explained_says_why(db: Db) -> None:
    name = f"qpe_ddl_{SUFFIX}"
    try:
        plan = await explained(db, f"CREATE TABLE {name} (id INTEGER)")
    finally:
        with db.admin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")

    assert plan.status == "unavailable"
    assert plan.error == (
        "only SELECT, INSERT, UPDATE and DELETE statements are explained, not CREATE"
    )


# -- redaction -------------------------------------------------------------------------------


def _everything_logged(records: list[logging.LogRecord]) -> str:
    return "\n".join(
        record.getMessage() + json.dumps(record.__dict__, default=repr) for record in records
    )


@pytest.mark.parametrize("inline", [False, True], ids=["bound", "inline"])
async def test_a_secret_literal_never_leaves_in_a_plan_or_a_log_line(
    db: Db, caplog: pytest.LogCaptureFixture, inline: bool
) -> None:
    if inline:
        sql = f"SELECT id FROM {ORDERS} WHERE note = '{SECRET}' AND amount > {SECRET_NUMBER}"
        parameters = None
    else:
        sql = f"SELECT id FROM {ORDERS} WHERE note = :note AND amount > :amount"
        parameters = {"note": SECRET, "amount": SECRET_NUMBER}
    profiler = db.profiler(log_findings=True)
    with caplog.at_level(logging.DEBUG, logger="queryprof"):
        async with profiler.scope("GET /secret") as scope:
            await db.run(sql, parameters)
        assert await profiler.flush(30)

    plan = only_plan(scope)
    assert plan.status == "ok", plan.error
    shown = (
        plan.text + json.dumps(plan.raw) + "".join(plan.hints) + _everything_logged(caplog.records)
    )
    assert "note" in shown
    assert SECRET not in shown
    assert str(SECRET_NUMBER) not in shown


async def test_capture_parameters_keeps_the_values_in_the_plan(server_db: Db) -> None:
    sql = f"SELECT id FROM {ORDERS} WHERE note = :note"
    plan = await explained(server_db, sql, {"note": SECRET}, capture_parameters=True)

    assert SECRET in plan.text
    assert SECRET in json.dumps(plan.raw)


def test_masking_covers_every_kind_of_literal() -> None:
    masked = mask_literals(
        "((note)::text = 'it''s'::text) AND (amount > 42) AND (x = E'a\\'b') AND "
        "(y = $tag$z$tag$) AND (t1.c2 = $1) AND (h = 0x1F) AND (f < 1.5e3) AND `b1` = _utf8'q'"
    )

    assert masked == (
        "((note)::text = ?::text) AND (amount > ?) AND (x = ?) AND "
        "(y = ?) AND (t1.c2 = $1) AND (h = ?) AND (f < ?) AND `b1` = ?"
    )
    assert mask_plan(
        {"Relation Name": "t2", "Filter": "(a = 5)", "Plans": [{"Filter": "'x'"}]}
    ) == {
        "Relation Name": "t2",
        "Filter": "(a = ?)",
        "Plans": [{"Filter": "?"}],
    }


def test_an_error_message_is_masked_too() -> None:
    error = ValueError(f"invalid input syntax for type integer: \"{SECRET}\" near '{SECRET}'")

    assert describe_error(error, capture_parameters=False) == (
        "ValueError: invalid input syntax for type integer: ? near ?"
    )
    assert SECRET in describe_error(error, capture_parameters=True)


# -- load: one plan per shape per window, a bounded queue --------------------------------------


def _slow_app(db: Db, sql: str, profiler: Profiler) -> FastAPI:
    """``GET /orders/{k}``: one slow statement, on an async endpoint for an async engine, a
    ``def`` endpoint (Starlette's threadpool) for a sync one."""
    app = FastAPI()
    engine = db.engine

    if isinstance(engine, AsyncEngine):

        @app.get("/orders/{k}")
        async def orders(k: int) -> dict[str, int]:
            async with engine.connect() as conn:
                rows = (await conn.execute(text(sql.format(k=k)), {"c": k % CUSTOMERS})).all()
            return {"rows": len(rows)}

    else:

        @app.get("/orders/{k}")
        def sync_orders(k: int) -> dict[str, int]:
            with engine.connect() as conn:
                rows = conn.execute(text(sql.format(k=k)), {"c": k % CUSTOMERS}).all()
            return {"rows": len(rows)}

    app.add_middleware(QueryProfilerMiddleware, profiler=profiler)
    return app


async def _hit(app: FastAPI, paths: list[str]) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        responses = await asyncio.gather(*(client.get(p) for p in paths))
    assert all(r.status_code == 200 for r in responses)


@pytest.fixture
async def pg_async(tables: Tables) -> AsyncIterator[Db]:
    db = await _db(PG_ASYNC, tables, pool_size=10, max_overflow=10)
    yield db
    await db.close()


@pytest.fixture(params=BACKENDS, ids=str)
async def pooled_db(request: pytest.FixtureRequest, tables: Tables) -> AsyncIterator[Db]:
    db = await _db(request.param, tables, pool_size=10, max_overflow=10)
    yield db
    await db.close()


async def test_200_concurrent_slow_requests_cost_one_explain(pooled_db: Db) -> None:
    profiler = pooled_db.profiler(explain_queue_size=5)
    scopes: list[Scope] = []
    profiler.on_scope_close(scopes.append)
    app = _slow_app(pooled_db, f"SELECT id FROM {ORDERS} WHERE customer_id = :c", profiler)

    await _hit(app, [f"/orders/{k}" for k in range(200)])
    assert await profiler.flush(30)

    stats = profiler.explainer.stats()
    assert stats["explained"] == 1
    assert stats["reused"] == 199
    assert stats["queue_peak"] <= 5
    assert stats["queued"] == 0
    assert stats["running"] == 0
    plans = {id(only_plan(s)) for s in scopes}
    assert len(scopes) == 200
    assert len(plans) == 1
    assert f"ON {ORDERS} (customer_id)" in only_plan(scopes[0]).hints[0]


async def test_the_dedup_window_allows_one_explain_per_window(pg_async: Db) -> None:
    profiler = pg_async.profiler(explain_window=0.4)
    app = _slow_app(pg_async, f"SELECT id FROM {ORDERS} WHERE customer_id = :c", profiler)

    for wave in range(3):
        await _hit(app, [f"/orders/{wave * 50 + k}" for k in range(50)])
        assert await profiler.flush(30)
        await asyncio.sleep(0.5)

    stats = profiler.explainer.stats()
    assert stats["explained"] == 3
    assert stats["reused"] == 147


async def test_a_full_queue_drops_and_counts_and_stays_bounded(pg_async: Db) -> None:
    # 60 shapes (a column alias each), each EXPLAIN ANALYZE sleeping 50 ms, one at a time.
    profiler = pg_async.profiler(explain_queue_size=3, explain_concurrency=1, explain_analyze=True)
    sql = "SELECT pg_sleep(0.05) AS slept_{k} WHERE :c >= 0"
    app = _slow_app(pg_async, sql, profiler)

    await _hit(app, [f"/orders/{k}" for k in range(60)])
    assert await profiler.flush(30)

    stats = profiler.explainer.stats()
    assert stats["dropped"] > 0
    assert stats["explained"] + stats["dropped"] + stats["timed_out"] == 60
    assert stats["queue_peak"] == 3
    assert stats["explained"] < 60


async def test_sampling_explains_only_a_share(pg_async: Db) -> None:
    profiler = pg_async.profiler(explain_sample_rate=0.5)
    app = _slow_app(pg_async, f"SELECT id FROM {ORDERS} WHERE customer_id = :c", profiler)

    for k in range(40):  # one request at a time: a new plan is asked for until one is in
        await _hit(app, [f"/orders/{k}"])
        assert await profiler.flush(30)

    stats = profiler.explainer.stats()
    assert stats["explained"] == 1
    assert stats["not_sampled"] + stats["reused"] == 39


# -- statements: what may be explained, what may be ANALYZEd -------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM orders WHERE id = $1",
        "select count(*) from orders",
        "/* sqlcommenter='x' */ SELECT 1",
        "(SELECT 1) UNION ALL (SELECT 2)",
        "WITH recent AS (SELECT * FROM orders) SELECT * FROM recent",
        "SELECT replace(note, 'a', 'b') FROM orders",
        "SELECT 'update', \"delete\" FROM orders",
        "SELECT pg_sleep(1)",
        "SELECT 1;",
    ],
)
def test_plain_reads_may_be_analyzed(sql: str) -> None:
    assert _sql.read_only_select(sql)
    assert _sql.not_explainable(sql) is None


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM orders FOR UPDATE",
        "SELECT * FROM orders FOR NO KEY UPDATE SKIP LOCKED",
        "SELECT * FROM orders FOR SHARE",
        "SELECT * FROM orders LOCK IN SHARE MODE",
        "WITH gone AS (DELETE FROM orders RETURNING *) SELECT * FROM gone",
        "WITH n AS (INSERT INTO log VALUES (1) RETURNING 1) SELECT * FROM n",
        "SELECT * INTO archive FROM orders",
        "SELECT * FROM orders INTO OUTFILE '/tmp/x'",
        "SELECT nextval('orders_id_seq')",
        "SELECT pg_advisory_lock(1)",
        "SELECT set_config('role', 'admin', false)",
        "SELECT pg_terminate_backend(42)",
        "SELECT 1; DELETE FROM orders",
        "UPDATE orders SET amount = 0",
        "DELETE FROM orders",
        "INSERT INTO orders VALUES (1)",
        "VALUES (1)",
        "CALL refresh()",
        "",
    ],
)
def test_anything_else_is_never_analyzed(sql: str) -> None:
    assert not _sql.read_only_select(sql)


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("CREATE INDEX ON orders (id)", "not CREATE"),
        ("TRUNCATE orders", "not TRUNCATE"),
        ("SET search_path TO x", "not SET"),
        ("EXPLAIN SELECT 1", "not EXPLAIN"),
        ("SELECT 1; DROP TABLE orders", "several statements"),
        ("  ", "empty"),
    ],
)
def test_statements_that_are_not_explained(sql: str, why: str) -> None:
    reason = _sql.not_explainable(sql)
    assert reason is not None
    assert why in reason


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value", "error"),
    [
        ("explain_timeout", 0, ValueError),
        ("explain_timeout", "5", TypeError),
        ("explain_window", -1, ValueError),
        ("explain_sample_rate", 0, ValueError),
        ("explain_sample_rate", 1.5, ValueError),
        ("explain_sample_rate", float("nan"), ValueError),
        ("explain_sample_rate", True, TypeError),
        ("explain_queue_size", 0, ValueError),
        ("explain_concurrency", 2.0, TypeError),
    ],
)
def test_a_bad_explain_setting_fails_at_construction_naming_it(
    setting: str, value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=setting):
        Profiler(**{setting: value})


def test_a_dialect_without_a_runner_gets_an_unavailable_plan() -> None:
    # Only the dialect's name is read to decide: an engine of a dialect with no runner.
    oracle = SimpleNamespace(dialect=SimpleNamespace(name="oracle", is_async=False))

    reason = worker._unavailable("SELECT 1 FROM dual", oracle, None)

    assert reason == "EXPLAIN is run on PostgreSQL, MySQL/MariaDB and SQLite only"


def test_explain_off_means_no_explainer() -> None:
    assert Profiler(explain=False).explainer is None
    assert Profiler(enabled=False).explainer is None
    assert Profiler().explainer is not None


async def test_flush_without_explain_returns_at_once() -> None:
    profiler = Profiler(explain=False)
    assert await profiler.flush()
    assert profiler.flush_sync()
