"""queryprof never breaks the application it watches: faults, cancellation, threads, modes.

Every fault here is real: PostgreSQL backends terminated with ``pg_terminate_backend`` while
requests run, an EXPLAIN whose connection is refused by the operating system, an EXPLAIN
blocked on a table lock until the server's timeout cuts it, a pool with no connection left,
tasks cancelled inside open transactions, a client that hangs up mid-response. In each case
the application sees exactly the errors it would see without queryprof, and queryprof counts
what happened, closes every scope and raises nothing (``internal_error_count`` stays put).

Not covered: restarting the PostgreSQL server itself. That needs a throwaway cluster the tests
own (``initdb`` as a non-root user on another port), which CI does not provide; terminating
every backend of the application, as below, is what a restart looks like to the client.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from apps import serve
from conftest import (
    MYSQL_SYNC_URL,
    MYSQL_URL,
    PG_SYNC_URL,
    PG_URL,
    postgres_table,
    recorder,
    require_server,
)
from queryprof import Profiler, QueryProfilerMiddleware, capture, current_scope
from queryprof._guard import internal_error_count

SUFFIX = f"{os.getpid():x}"
TABLE = f"qpr_items_{SUFFIX}"


@pytest.fixture
def profilers() -> Iterator[Callable[..., Profiler]]:
    """Make profilers (findings not logged, a registry of their own); uninstrumented after."""
    made: list[Profiler] = []

    def make(**settings: Any) -> Profiler:
        settings.setdefault("log_findings", False)
        settings.setdefault("registry", CollectorRegistry())
        profiler = Profiler(**settings)
        made.append(profiler)
        return profiler

    yield make
    for profiler in made:
        profiler.flush_sync(30)
        profiler.uninstrument()


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
def pg_table() -> Iterator[str]:
    """A small PostgreSQL table, dropped afterwards."""
    fill = "SELECT g, 'n' || g FROM generate_series(1, 50) g"
    with postgres_table(TABLE, "id INTEGER PRIMARY KEY, note TEXT", fill) as name:
        yield name


# -- PostgreSQL connections terminated under load -----------------------------------------------


def _terminate(admin: Engine, application_name: str) -> int:
    with admin.connect() as conn:
        killed = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name AND pid <> pg_backend_pid()"
            ),
            {"name": application_name},
        ).scalar_one()
    return int(killed)


async def test_terminated_postgresql_connections_under_load(
    profilers: Callable[..., Profiler],
) -> None:
    require_server(PG_URL)
    name = f"qpr_load_{SUFFIX}"
    engine = create_async_engine(
        PG_URL,
        pool_size=10,
        max_overflow=0,
        connect_args={"server_settings": {"application_name": name}},
    )
    admin = create_engine(PG_SYNC_URL, poolclass=NullPool)
    # explain_window tiny: the slow route asks for a new EXPLAIN on every request, on the
    # same engine, so the EXPLAIN connections are terminated too.
    profiler = profilers(slow_query_threshold=0.04, explain_window=0.001, explain_timeout=2.0)
    profiler.instrument(engine)
    closed = recorder(profiler)
    app_errors: list[BaseException] = []
    app = FastAPI()

    @app.get("/work/{rid}")
    async def work(rid: int) -> Any:
        scope = current_scope()
        assert scope is not None
        scope.attributes["rid"] = rid
        done = 0
        try:
            async with engine.connect() as conn:
                for i in range(10):
                    await conn.execute(
                        text("SELECT pg_sleep(0.005), CAST(:i AS INTEGER)"), {"i": i}
                    )
                    done += 1
                if rid % 10 == 0:
                    await conn.execute(text("SELECT pg_sleep(0.05)"))
                    done += 1
        except exc.DBAPIError as error:  # what any app on asyncpg sees when its backend dies
            app_errors.append(error)
            return JSONResponse({"done": done}, status_code=503)
        return {"done": done}

    app.add_middleware(QueryProfilerMiddleware, profiler=profiler)
    errors_before = internal_error_count()
    stop = asyncio.Event()
    kills: list[int] = []

    async def killer() -> None:
        # A few rounds while the load runs, then the requests after them succeed again.
        for _ in range(4):
            await asyncio.sleep(0.12)
            if stop.is_set():
                return
            kills.append(await asyncio.to_thread(_terminate, admin, name))

    async def load(http: httpx.AsyncClient, rids: list[int]) -> dict[int, httpx.Response]:
        results = {}
        for rid in rids:
            results[rid] = await http.get(f"/work/{rid}")
        return results

    try:
        async with client(app) as http:
            kill_task = asyncio.create_task(killer())
            parts = await asyncio.gather(*(load(http, list(range(k, 160, 10))) for k in range(10)))
            stop.set()
            await kill_task
            responses = {rid: r for part in parts for rid, r in part.items()}
            assert await profiler.flush(30)
            # On its own, with nothing reset: the next slow request gets its plan again.
            await asyncio.sleep(0.01)
            after = await http.get("/work/1000")
            assert await profiler.flush(30)
    finally:
        await engine.dispose()
        admin.dispose()

    assert sum(kills) > 0
    statuses = {r.status_code for r in responses.values()}
    assert statuses <= {200, 503}
    assert 503 in statuses, "no request was hit: the test proved nothing"
    assert 200 in statuses
    assert all(isinstance(e, exc.DBAPIError) for e in app_errors)
    assert internal_error_count() == errors_before
    # Every request's scope closed once, with exactly the statements it ran (a failed one is
    # recorded with its error).
    by_rid = {s.attributes["rid"]: s for s in closed}
    assert len(closed) == len(by_rid) == 161
    assert all(s.closed for s in closed)
    for rid, response in responses.items():
        scope, done = by_rid[rid], response.json()["done"]
        failed = [q for q in scope.queries if q.error is not None]
        if response.status_code == 200:
            assert (scope.query_count, failed) == (done, [])
        else:
            assert scope.query_count in (done, done + 1)
            assert len(failed) == scope.query_count - done
    # The EXPLAIN worker recovered without help: idle, and the last slow query has its plan.
    assert profiler.explainer is not None
    stats = profiler.explainer.stats()
    assert (stats["running"], stats["queued"]) == (0, 0)
    assert after.status_code == 200
    [slow] = [f for f in by_rid[1000].findings if f.kind == "slow_query"]
    assert slow.plan is not None
    assert slow.plan.status == "ok", slow.plan.error


# -- EXPLAIN faults: refused, timing out, no connection in the pool -----------------------------


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_explain_whose_connection_is_refused_is_counted_request_unaffected(
    profilers: Callable[..., Profiler], pg_table: str
) -> None:
    engine = create_engine(PG_SYNC_URL, poolclass=NullPool)
    refuse = threading.Event()
    port = _closed_port()

    @event.listens_for(engine, "do_connect")
    def _refused_once_asked(dialect: Any, conn_rec: Any, cargs: Any, cparams: Any) -> None:
        if refuse.is_set():
            cparams["port"] = port  # nothing listens there: the OS refuses the connection

    profiler = profilers(slow_query_threshold=1e-6)
    profiler.instrument(engine)
    errors_before = internal_error_count()
    try:
        with profiler.scope("GET /items") as scope:
            with engine.connect() as conn:
                rows = conn.execute(text(f"SELECT id FROM {pg_table} WHERE note = :n"), {"n": "n7"})
                assert rows.all() == [(7,)]
            refuse.set()
        assert await profiler.flush(30)
    finally:
        engine.dispose()

    [finding] = [f for f in scope.findings if f.kind == "slow_query"]
    assert finding.plan is not None
    assert finding.plan.status == "error"
    assert finding.plan.error is not None
    assert finding.plan.error.startswith("OperationalError")
    assert "refused" in finding.plan.error
    assert profiler.explainer is not None
    assert profiler.explainer.stats()["failed"] == 1
    assert internal_error_count() == errors_before


async def test_an_explain_blocked_on_a_lock_times_out_off_the_request_path(
    profilers: Callable[..., Profiler], pg_table: str
) -> None:
    engine = create_engine(PG_SYNC_URL)
    locker = create_engine(PG_SYNC_URL, poolclass=NullPool)
    profiler = profilers(slow_query_threshold=1e-6, explain_timeout=0.3)
    profiler.instrument(engine)
    errors_before = internal_error_count()
    try:
        with locker.connect() as lock_conn:
            scope = profiler.scope("GET /items")
            with scope:
                with engine.begin() as conn:
                    conn.execute(text(f"SELECT note FROM {pg_table} WHERE id = :id"), {"id": 3})
                # The planner needs a lock on the table: the EXPLAIN waits behind this one.
                lock_conn.exec_driver_sql(f"LOCK TABLE {pg_table} IN ACCESS EXCLUSIVE MODE")
                closing = time.perf_counter()
            closed_in = time.perf_counter() - closing
            assert await profiler.flush(30)
            lock_conn.rollback()
    finally:
        engine.dispose()
        locker.dispose()

    assert closed_in < 0.2  # the request does not wait for its EXPLAIN
    [finding] = [f for f in scope.findings if f.kind == "slow_query"]
    assert finding.plan is not None
    assert (finding.plan.status, finding.plan.error) == ("error", "timed out after 0.3 s")
    assert profiler.explainer is not None
    assert profiler.explainer.stats()["timed_out"] == 1
    assert internal_error_count() == errors_before


async def test_an_exhausted_pool_is_the_app_error_and_the_scope_still_counts(
    profilers: Callable[..., Profiler],
) -> None:
    require_server(PG_URL)
    engine = create_async_engine(PG_URL, pool_size=1, max_overflow=0, pool_timeout=0.1)
    profiler = profilers()
    profiler.instrument(engine)
    closed = recorder(profiler)
    app = FastAPI()

    @app.get("/two-connections")
    async def two_connections() -> dict[str, int]:
        async with engine.connect() as first:
            await first.execute(text("SELECT 1"))
            async with engine.connect() as second:  # the pool has no second connection
                await second.execute(text("SELECT 2"))
        return {"ok": 1}

    app.add_middleware(QueryProfilerMiddleware, profiler=profiler)
    errors_before = internal_error_count()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://testserver"
        ) as http:
            with pytest.raises(exc.TimeoutError, match="QueuePool limit of size 1"):
                await http.get("/two-connections")
            response_after = None
            async with engine.connect() as conn:  # the pool is whole again
                response_after = (await conn.execute(text("SELECT 3"))).scalar_one()
    finally:
        await engine.dispose()

    assert response_after == 3
    assert len(closed) == 1
    assert closed[0].closed
    assert (closed[0].name, closed[0].query_count) == ("GET /two-connections", 1)
    [txn] = closed[0].transactions
    assert txn.end_seen
    assert internal_error_count() == errors_before


# -- cancellation -------------------------------------------------------------------------------


def _listeners_gone() -> bool:
    return (
        capture.installed_targets() == []
        and not event.contains(Engine, "do_execute", capture._on_do_execute)
        and not event.contains(Session, "after_begin", capture._on_after_begin)
    )


@pytest.fixture(params=["postgresql+asyncpg", "mysql+aiomysql"])
async def async_engine(request: pytest.FixtureRequest) -> AsyncIterator[AsyncEngine]:
    url = PG_URL if request.param.startswith("postgresql") else MYSQL_URL
    require_server(url)
    engine = create_async_engine(url, pool_size=2, max_overflow=0)
    async with engine.begin() as conn:
        await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {TABLE}_c")
        await conn.exec_driver_sql(f"CREATE TABLE {TABLE}_c (id INTEGER PRIMARY KEY)")
    try:
        yield engine
    finally:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {TABLE}_c")
        await engine.dispose()


async def test_a_task_cancelled_inside_a_transaction_closes_everything(
    async_engine: AsyncEngine,
) -> None:
    tasks_before = asyncio.all_tasks()
    profiler = Profiler(
        log_findings=False, registry=CollectorRegistry(), long_transaction_threshold=0.05
    )
    profiler.instrument(async_engine)
    inside = asyncio.Event()

    async def import_job() -> None:
        async with AsyncSession(async_engine) as session, session.begin():
            await session.execute(text(f"INSERT INTO {TABLE}_c (id) VALUES (1)"))
            await session.execute(text(f"SELECT id FROM {TABLE}_c"))
            inside.set()
            await asyncio.sleep(30)  # cancelled here, the transaction open

    errors_before = internal_error_count()
    async with profiler.scope("import") as scope:
        task = asyncio.create_task(import_job())
        await inside.wait()
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await profiler.flush(30)
    profiler.uninstrument()
    async with async_engine.connect() as conn:  # the insert was rolled back
        assert (await conn.execute(text(f"SELECT count(*) FROM {TABLE}_c"))).scalar_one() == 0

    assert scope.closed
    assert scope.query_count == 2
    [txn] = scope.transactions
    assert (txn.outcome, txn.end_seen, txn.statements) == ("rollback", True, 2)
    [long] = [f for f in scope.findings if f.kind == "long_transaction"]
    assert long.count == 2
    assert long.detail is not None
    assert "ended in rollback" in long.detail
    assert internal_error_count() == errors_before
    assert asyncio.all_tasks() - tasks_before == set()
    assert _listeners_gone()


async def test_a_client_hanging_up_mid_response_rolls_back_and_closes_the_scope() -> None:
    require_server(PG_URL)
    engine = create_async_engine(PG_URL, pool_size=2, max_overflow=0)
    profiler = Profiler(
        log_findings=False, registry=CollectorRegistry(), long_transaction_threshold=0.05
    )
    profiler.instrument(engine)
    closed = recorder(profiler)
    cancelled = asyncio.Event()
    app = FastAPI()

    @app.get("/export")
    async def export() -> StreamingResponse:
        async def rows() -> AsyncIterator[str]:
            try:
                async with AsyncSession(engine) as session, session.begin():
                    for i in range(1000):
                        value = await session.execute(text("SELECT CAST(:i AS INTEGER)"), {"i": i})
                        yield f"{value.scalar_one()}\n"
                        await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        return StreamingResponse(rows(), media_type="text/plain")

    app.add_middleware(QueryProfilerMiddleware, profiler=profiler)
    errors_before = internal_error_count()
    tasks_before = asyncio.all_tasks()
    try:
        async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
            received = []
            async with http.stream("GET", "/export") as response:
                async for line in response.aiter_lines():
                    received.append(line)
                    if len(received) == 5:
                        break  # hang up mid-response
            async with asyncio.timeout(10):
                while not closed:
                    await asyncio.sleep(0.01)
        assert await profiler.flush(30)
    finally:
        profiler.uninstrument()
        await engine.dispose()

    assert cancelled.is_set()
    assert received == ["0", "1", "2", "3", "4"]
    [scope] = closed
    assert scope.name == "GET /export"
    assert 5 <= scope.query_count < 1000
    [txn] = scope.transactions
    assert txn.end_seen
    assert "long_transaction" in {f.kind for f in scope.findings}
    assert internal_error_count() == errors_before
    assert asyncio.all_tasks() - tasks_before == set()
    assert _listeners_gone()


async def test_a_transaction_whose_rollback_is_cancelled_is_a_rollback() -> None:
    import anyio

    require_server(PG_URL)
    engine = create_async_engine(PG_URL, pool_size=1, max_overflow=0)
    profiler = Profiler(log_findings=False, registry=CollectorRegistry())
    profiler.instrument(engine)

    async def work() -> None:
        async with AsyncSession(engine) as session, session.begin():
            await session.execute(text("SELECT 1"))
            await asyncio.sleep(30)

    try:
        async with profiler.scope("job") as scope, anyio.create_task_group() as group:
            # anyio cancels every await after the first, the rollback's too: SQLAlchemy then
            # invalidates the connection, and the server rolls the transaction back.
            group.start_soon(work)
            await asyncio.sleep(0.05)
            group.cancel_scope.cancel()
    finally:
        profiler.uninstrument()
        await engine.dispose()

    [txn] = scope.transactions
    assert (txn.outcome, txn.end_seen) == ("rollback", True)


# -- threads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [PG_SYNC_URL, MYSQL_SYNC_URL], ids=["psycopg", "pymysql"])
def test_sixteen_threads_on_a_real_server_each_count_exactly_their_own(
    profilers: Callable[..., Profiler], url: str
) -> None:
    require_server(url)
    engine = create_engine(url, pool_size=16, max_overflow=0)
    profiler = profilers()
    profiler.instrument(engine)

    def job(n: int) -> tuple[int, int, float]:
        with profiler.scope(f"job {n}") as scope, engine.connect() as conn:
            for i in range(n):
                conn.execute(text("SELECT :i"), {"i": i})
                if random.random() < 0.2:
                    time.sleep(0)  # let another thread run a statement in between
        return scope.query_count, len(scope.queries), scope.db_time

    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(job, range(1, 97)))
    finally:
        engine.dispose()

    assert [(count, kept) for count, kept, _ in results] == [(n, n) for n in range(1, 97)]
    assert all(db_time > 0 for _, _, db_time in results)


# -- off switches -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["setting", "environment"])
async def test_a_disabled_profiler_adds_no_listener_and_no_scope(
    monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    if how == "environment":
        monkeypatch.setenv("QUERYPROF_ENABLED", "0")
        profiler = Profiler(server_timing=True, registry=CollectorRegistry())
    else:
        profiler = Profiler(enabled=False, server_timing=True, registry=CollectorRegistry())
    profiler.instrument()
    profiler.instrument(engine)
    closed = recorder(profiler)
    app = FastAPI()

    @app.get("/")
    async def root() -> dict[str, int]:
        async with engine.connect() as conn:
            return {"one": (await conn.execute(text("SELECT 1"))).scalar_one()}

    app.add_middleware(QueryProfilerMiddleware, profiler=profiler)
    try:
        async with client(app) as http:
            response = await http.get("/")
    finally:
        await engine.dispose()

    assert response.json() == {"one": 1}
    assert closed == []
    assert "server-timing" not in response.headers
    assert profiler.explainer is None
    assert _listeners_gone()
    assert not event.contains(engine.sync_engine, "do_execute", capture._on_do_execute)
    assert not event.contains(engine.sync_engine.pool, "checkin", capture._on_checkin)


# -- sampling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", True])
def test_a_bad_sample_rate_fails_at_construction_naming_it(bad: Any) -> None:
    with pytest.raises((ValueError, TypeError), match="sample_rate"):
        Profiler(sample_rate=bad)


@pytest.fixture
def sqlite_engine(tmp_path: Any) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'sampling.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE item (id INTEGER PRIMARY KEY, note TEXT)")
        conn.exec_driver_sql("INSERT INTO item VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    yield engine
    engine.dispose()


def _n_plus_one_and_slow(engine: Engine) -> None:
    with engine.connect() as conn:
        for i in range(6):
            conn.execute(text("SELECT note FROM item WHERE id = :id"), {"id": i})
        conn.execute(
            text(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                "WHERE i < 300000) SELECT count(*) FROM n"
            )
        )


def test_an_unsampled_scope_keeps_exact_counts_and_findings_without_locations_or_plans(
    profilers: Callable[..., Profiler], sqlite_engine: Engine
) -> None:
    profiler = profilers(sample_rate=0.0, slow_query_threshold=0.05)
    profiler.instrument(sqlite_engine)
    with profiler.scope("nightly") as scope:
        _n_plus_one_and_slow(sqlite_engine)
    assert profiler.flush_sync(30)

    assert not scope.sampled
    assert scope.query_count == len(scope.queries) == 7
    assert all(q.location is None for q in scope.queries)
    kinds = {f.kind: f for f in scope.findings}
    assert set(kinds) == {"n_plus_one", "slow_query"}
    assert kinds["n_plus_one"].count == 6
    assert all(f.location is None for f in scope.findings)
    plan = kinds["slow_query"].plan
    assert plan is not None
    assert (plan.status, plan.error) == ("skipped", "the scope was not sampled (sample_rate=0.0)")
    assert profiler.explainer is not None
    assert profiler.explainer.stats()["explained"] == 0


def test_a_sampled_scope_gets_locations_and_plans(
    profilers: Callable[..., Profiler], sqlite_engine: Engine
) -> None:
    profiler = profilers(sample_rate=1.0, slow_query_threshold=0.05)
    profiler.instrument(sqlite_engine)
    with profiler.scope("nightly") as scope:
        _n_plus_one_and_slow(sqlite_engine)
    assert profiler.flush_sync(30)

    assert scope.sampled
    assert all(
        f.location is not None and "_n_plus_one_and_slow" in f.location for f in scope.findings
    )
    [slow] = [f for f in scope.findings if f.kind == "slow_query"]
    assert slow.plan is not None
    assert slow.plan.status == "ok"


def test_a_share_of_scopes_is_sampled_and_counts_stay_exact_in_every_scope(
    profilers: Callable[..., Profiler], sqlite_engine: Engine
) -> None:
    profiler = profilers(sample_rate=0.25)
    profiler.instrument(sqlite_engine)
    scopes = []
    for n in range(400):
        with profiler.scope(f"job {n}") as scope, sqlite_engine.connect() as conn:
            for i in range(n % 5 + 1):
                conn.execute(text("SELECT :i"), {"i": i})
        scopes.append(scope)

    sampled = [s for s in scopes if s.sampled]
    assert 50 <= len(sampled) <= 150  # 100 expected; the odds of missing are below 1e-7
    assert [s.query_count for s in scopes] == [n % 5 + 1 for n in range(400)]
    for s in scopes:
        assert all((q.location is not None) == s.sampled for q in s.queries)


def test_an_unsampled_scope_inside_a_sampled_one_gets_the_locations(
    profilers: Callable[..., Profiler], sqlite_engine: Engine
) -> None:
    outer_profiler = profilers(sample_rate=1.0)
    inner_profiler = profilers(sample_rate=0.0)
    outer_profiler.instrument(sqlite_engine)
    with (
        outer_profiler.scope("outer"),
        inner_profiler.scope("inner") as inner,
        sqlite_engine.connect() as conn,
    ):
        conn.execute(text("SELECT 1"))
    assert not inner.sampled
    [query] = inner.queries
    assert query.location is not None
