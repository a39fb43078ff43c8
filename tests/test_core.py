"""The profiler's core: settings, instrumentation, scopes, capture and the guard."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.ext.asyncio import create_async_engine

import queryprof
from queryprof import Profiler, capture
from queryprof._guard import internal_error_count

metadata = MetaData()
items = Table(
    "qp_core_items", metadata, Column("id", Integer, primary_key=True), Column("name", String(20))
)


@pytest.fixture
def engine(tmp_path: object) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path}/core.db")
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(items), [{"id": i, "name": f"item {i}"} for i in range(1, 21)])
    yield engine
    engine.dispose()


@pytest.fixture
def profiler(engine: Engine) -> Iterator[Profiler]:
    profiler = Profiler(log_findings=False)
    profiler.instrument(engine)
    yield profiler
    profiler.uninstrument()


def run_selects(engine: Engine, n: int) -> None:
    with engine.connect() as conn:
        for i in range(n):
            conn.execute(select(items).where(items.c.id == i)).all()


def listening() -> bool:
    return event.contains(Engine, "do_execute", capture._on_do_execute)


# -- the public face ------------------------------------------------------------------------


def test_public_names_are_listed_once_and_sorted() -> None:
    assert queryprof.__all__ == sorted(queryprof.__all__)
    assert set(queryprof.__all__) == {
        "Finding",
        "Plan",
        "Profiler",
        "Query",
        "QueryProfilerMiddleware",
        "Scope",
        "Settings",
        "Transaction",
        "allow",
        "current_scope",
    }


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value", "error"),
    [
        ("n_plus_one_threshold", 1, ValueError),
        ("n_plus_one_threshold", "5", TypeError),
        ("n_plus_one_threshold", True, TypeError),
        ("slow_query_threshold", 0, ValueError),
        ("slow_query_threshold", -1.0, ValueError),
        ("slow_query_threshold", float("nan"), ValueError),
        ("long_transaction_threshold", "2s", TypeError),
        ("capture_parameters", "yes", TypeError),
        ("opentelemetry", "sometimes", ValueError),
        ("max_queries_per_scope", 0, ValueError),
        ("allow_sql", ["("], ValueError),
        ("allow_relationships", "Author.books", TypeError),
    ],
)
def test_a_bad_setting_fails_at_construction_naming_it(
    setting: str, value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=setting) as info:
        Profiler(**{setting: value})
    assert repr(value)[:10] in str(info.value) or setting == "allow_sql"


def test_an_unknown_setting_is_a_type_error_listing_the_known_ones() -> None:
    with pytest.raises(TypeError, match=r"n_plus_one_treshold.*known settings.*n_plus_one"):
        Profiler(n_plus_one_treshold=3)


def test_disabled_profiler_attaches_no_listener(engine: Engine) -> None:
    profiler = Profiler(enabled=False)
    profiler.instrument()
    profiler.instrument(engine)
    assert not listening()
    assert capture.installed_targets() == []


def test_environment_variable_disables_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUERYPROF_ENABLED", "0")
    profiler = Profiler()
    profiler.instrument()
    assert not listening()
    monkeypatch.setenv("QUERYPROF_ENABLED", "maybe")
    with pytest.raises(ValueError, match="QUERYPROF_ENABLED"):
        Profiler()


# -- instrumentation ------------------------------------------------------------------------


def test_instrument_rejects_what_is_not_an_engine() -> None:
    with pytest.raises(TypeError, match="Engine or AsyncEngine"):
        Profiler().instrument("sqlite://")


def test_instrument_every_engine_sees_engines_made_later(tmp_path: object) -> None:
    profiler = Profiler(log_findings=False)
    profiler.instrument()
    try:
        later = create_engine("sqlite://")
        with profiler.scope("s") as scope, later.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert scope.query_count == 1
    finally:
        profiler.uninstrument()
    assert not listening()


def test_instrument_twice_counts_each_statement_once(engine: Engine, profiler: Profiler) -> None:
    profiler.instrument(engine)
    profiler.instrument()
    with profiler.scope("s") as scope:
        run_selects(engine, 3)
    assert scope.query_count == 3


def test_two_profilers_see_each_statement_once_and_stand_alone(engine: Engine) -> None:
    first, second = Profiler(log_findings=False), Profiler(log_findings=False)
    first.instrument()
    second.instrument(engine)
    with first.scope("outer") as outer, second.scope("inner") as inner:
        run_selects(engine, 4)
    assert (outer.query_count, inner.query_count) == (4, 4)
    first.uninstrument()
    with second.scope("after") as after:
        run_selects(engine, 2)
    assert after.query_count == 2
    second.uninstrument()
    with second.scope("gone") as gone:
        run_selects(engine, 2)
    assert gone.query_count == 0
    assert capture.installed_targets() == []


def test_async_engine_is_instrumented_through_its_sync_engine(tmp_path: object) -> None:
    async def main() -> int:
        async_engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/a.db")
        profiler = Profiler(log_findings=False)
        profiler.instrument(async_engine)
        try:
            async with profiler.scope("s") as scope, async_engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                await conn.execute(text("SELECT 2"))
            return scope.query_count
        finally:
            profiler.uninstrument()
            await async_engine.dispose()

    assert asyncio.run(main()) == 2


# -- scopes ---------------------------------------------------------------------------------


def test_statements_outside_any_scope_are_ignored(engine: Engine, profiler: Profiler) -> None:
    run_selects(engine, 3)
    assert queryprof.current_scope() is None


def test_nested_scopes_both_count_and_current_is_innermost(
    engine: Engine, profiler: Profiler
) -> None:
    with profiler.scope("outer") as outer:
        run_selects(engine, 1)
        with profiler.scope("inner") as inner:
            assert queryprof.current_scope() is inner
            run_selects(engine, 2)
        assert queryprof.current_scope() is outer
    assert (outer.query_count, inner.query_count) == (3, 2)
    assert queryprof.current_scope() is None


def test_a_closed_scope_is_frozen(engine: Engine, profiler: Profiler) -> None:
    async def main() -> int:
        release = asyncio.Event()

        async def straggler() -> None:
            await release.wait()
            run_selects(engine, 5)

        async with profiler.scope("request") as scope:
            task = asyncio.create_task(straggler())
        release.set()
        await task
        return scope.query_count

    assert asyncio.run(main()) == 0


def test_tasks_started_in_a_scope_report_into_it(engine: Engine, profiler: Profiler) -> None:
    async def main() -> int:
        async def work(n: int) -> None:
            await asyncio.sleep(0)
            run_selects(engine, n)

        async with profiler.scope("request") as scope:
            await asyncio.gather(work(1), work(2), asyncio.create_task(work(3)))
        return scope.query_count

    assert asyncio.run(main()) == 6


def test_sixteen_threads_each_with_its_own_scope_are_exact(
    engine: Engine, profiler: Profiler
) -> None:
    def job(n: int) -> int:
        with profiler.scope(f"job {n}") as scope:
            run_selects(engine, n)
        return scope.query_count

    with ThreadPoolExecutor(16) as pool:
        counts = list(pool.map(job, range(1, 49)))
    assert counts == list(range(1, 49))


def test_threads_sharing_one_scope_count_every_statement(
    engine: Engine, profiler: Profiler
) -> None:
    with profiler.scope("shared") as scope:
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(run_selects, engine, 25))
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert scope.query_count == 200


def test_the_record_cap_keeps_counting(engine: Engine) -> None:
    profiler = Profiler(log_findings=False, max_queries_per_scope=10)
    profiler.instrument(engine)
    try:
        with profiler.scope("big") as scope:
            run_selects(engine, 25)
    finally:
        profiler.uninstrument()
    assert scope.query_count == 25
    assert len(scope.queries) == 10
    assert scope.dropped_queries == 15
    assert scope.db_time >= sum(q.duration for q in scope.queries)


# -- what counts as a query -------------------------------------------------------------------


def test_savepoints_and_transaction_control_are_not_queries(
    engine: Engine, profiler: Profiler
) -> None:
    with profiler.scope("s") as scope, engine.connect() as conn, conn.begin():
        with conn.begin_nested():
            conn.execute(select(items).where(items.c.id == 1))
        conn.exec_driver_sql("SAVEPOINT manual_one")
        conn.exec_driver_sql("RELEASE SAVEPOINT manual_one")
    assert scope.query_count == 1
    assert [q.operation for q in scope.queries] == ["SELECT"]


def test_executemany_is_one_statement(engine: Engine, profiler: Profiler) -> None:
    with profiler.scope("s") as scope, engine.begin() as conn:
        conn.execute(insert(items), [{"id": 100 + i, "name": "x"} for i in range(10)])
    assert scope.query_count == 1
    assert scope.queries[0].executemany
    assert scope.queries[0].operation == "INSERT"


def test_driver_sql_without_parameters_is_counted(engine: Engine, profiler: Profiler) -> None:
    with profiler.scope("s") as scope, engine.connect() as conn:
        conn.exec_driver_sql("SELECT count(*) FROM qp_core_items")
    assert scope.query_count == 1
    assert scope.queries[0].sql == "SELECT count(*) FROM qp_core_items"


def test_a_failed_statement_is_recorded_and_its_error_reaches_the_caller(
    engine: Engine, profiler: Profiler
) -> None:
    from sqlalchemy.exc import OperationalError

    with (
        profiler.scope("s") as scope,
        engine.connect() as conn,
        pytest.raises(OperationalError, match="no such table"),
    ):
        conn.execute(text("SELECT * FROM no_such_table"))
    assert scope.query_count == 1
    assert scope.queries[0].error == "OperationalError"


def test_parameters_are_kept_only_when_asked(engine: Engine) -> None:
    for capture_parameters, expected in ((False, None), (True, (7,))):
        profiler = Profiler(log_findings=False, capture_parameters=capture_parameters)
        profiler.instrument(engine)
        try:
            with profiler.scope("s") as scope, engine.connect() as conn:
                conn.execute(select(items).where(items.c.id == 7))
        finally:
            profiler.uninstrument()
        assert scope.queries[0].parameters == expected
        assert "7" not in scope.queries[0].sql


def test_results_are_unchanged_by_profiling(engine: Engine, profiler: Profiler) -> None:
    with engine.connect() as conn:
        bare = conn.execute(select(items).order_by(items.c.id)).all()
    with profiler.scope("s"), engine.connect() as conn:
        profiled = conn.execute(select(items).order_by(items.c.id)).all()
    assert profiled == bare


# -- never break the host ---------------------------------------------------------------------


def test_a_failing_callback_is_counted_and_logged_once_never_raised(
    engine: Engine, profiler: Profiler, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(scope: queryprof.Scope) -> None:
        raise RuntimeError("exporter bug")

    profiler.on_scope_close(broken)
    before = internal_error_count()
    with caplog.at_level(logging.ERROR, logger="queryprof"):
        for _ in range(3):
            with profiler.scope("s"):
                run_selects(engine, 1)
    assert internal_error_count() == before + 3
    assert len([r for r in caplog.records if "internal error" in r.getMessage()]) <= 1


def test_allow_needs_a_reason() -> None:
    with pytest.raises(ValueError, match="reason"):
        queryprof.allow("")


def test_the_console_script_prints_a_fingerprint(capsys: pytest.CaptureFixture[str]) -> None:
    from queryprof.cli import main
    from queryprof.fingerprint import fingerprint

    assert main(["fingerprint", "SELECT * FROM books WHERE author_id = 42"]) == 0
    out = capsys.readouterr().out
    assert f"fingerprint: {fingerprint('select * from books where author_id = 7')}" in out
    assert "42" not in out


# -- call sites ---------------------------------------------------------------------------------


def _repository_get(engine: Engine, i: int) -> None:
    with engine.connect() as conn:
        conn.execute(select(items).where(items.c.id == i)).all()


def _loop_through_repository(engine: Engine) -> int:
    for i in range(6):
        _repository_get(engine, i)
    return _line_of_loop


_line_of_loop = _loop_through_repository.__code__.co_firstlineno + 2


def test_the_location_is_the_first_application_frame(engine: Engine, profiler: Profiler) -> None:
    with profiler.scope("s") as scope:
        _loop_through_repository(engine)
    (finding,) = [f for f in scope.findings if f.kind == "n_plus_one"]
    assert finding.location is not None
    assert finding.location.endswith("in _repository_get")


def test_callsite_exclude_skips_a_repository_layer(engine: Engine) -> None:
    profiler = Profiler(log_findings=False, callsite_exclude=["_repository_*"])
    profiler.instrument(engine)
    try:
        with profiler.scope("s") as scope:
            line = _loop_through_repository(engine)
    finally:
        profiler.uninstrument()
    (finding,) = [f for f in scope.findings if f.kind == "n_plus_one"]
    assert finding.location == f"tests/test_core.py:{line} in _loop_through_repository"
    assert finding.count == 6
