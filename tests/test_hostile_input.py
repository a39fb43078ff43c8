"""Whatever the application sends, queryprof raises nothing and keeps bounded, documented sizes.

Statements of 1 MB, binary and non-UTF-8 parameters, DDL, several statements in one string,
COPY, driver-level SQL, comments and quoted identifiers that look like keywords, on the real
databases; and ASGI traffic off the beaten path. The sizes (docs/production.md): a shape text
(``finding.sql``, ``record.sql`` in logs) is at most ``MAX_SHAPE_CHARS`` (4096) characters,
the statement in a log message at most 120, and statement texts over ``MAX_KEYED_CHARS`` are
cached by digest in at most ``LONG_SHAPE_CACHE_SIZE`` entries.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, create_engine, exc, text

from conftest import MYSQL_SYNC_URL, PG_SYNC_URL, require_server
from queryprof import Profiler, QueryProfilerMiddleware, Scope
from queryprof._guard import internal_error_count
from queryprof.fingerprint import (
    LONG_SHAPE_CACHE_SIZE,
    MAX_KEYED_CHARS,
    MAX_SHAPE_CHARS,
    long_shape_cache_size,
    shape_cache_stats,
    shape_of,
)

TABLE = f"qph_blobs_{os.getpid():x}"
BLOB_TYPE = {"sqlite": "BLOB", "postgresql": "BYTEA", "mysql": "LONGBLOB"}
MAX_MESSAGE = 1000  # a log line with a 1 MB statement in it stays under this


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def engine(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Engine]:
    url = {
        "sqlite": f"sqlite:///{tmp_path / 'hostile.db'}",
        "postgresql": PG_SYNC_URL,
        "mysql": MYSQL_SYNC_URL,
    }[request.param]
    require_server(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {TABLE}")
        blob = BLOB_TYPE[engine.dialect.name if engine.dialect.name != "mariadb" else "mysql"]
        conn.exec_driver_sql(f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, data {blob})")
    try:
        yield engine
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {TABLE}")
        engine.dispose()


@pytest.fixture
def profiler() -> Iterator[Profiler]:
    profiler = Profiler(registry=CollectorRegistry(), slow_query_threshold=1e-6)
    profiler.instrument()
    errors_before = internal_error_count()
    yield profiler
    profiler.flush_sync(30)
    profiler.uninstrument()
    assert internal_error_count() == errors_before  # nothing went wrong inside queryprof


def test_a_1_mb_statement_is_cut_to_documented_sizes_everywhere(
    engine: Engine, profiler: Profiler, caplog: pytest.LogCaptureFixture
) -> None:
    values = ", ".join(f"({i}, NULL)" for i in range(100_000))
    huge = f"INSERT INTO {TABLE} (id, data) VALUES {values}"
    assert len(huge) > 1_000_000
    shape_of(f"DELETE FROM {TABLE}")
    cached_before = shape_cache_stats()["size"]
    with caplog.at_level(logging.WARNING, logger="queryprof"):
        with profiler.scope("bulk") as scope, engine.begin() as conn:
            conn.exec_driver_sql(huge)
            conn.exec_driver_sql(f"DELETE FROM {TABLE}")
            conn.exec_driver_sql(huge)  # the second run is a cache hit on its digest
        assert profiler.flush_sync(30)

    assert scope.query_count == 3
    assert all(len(q.sql) <= MAX_SHAPE_CHARS for q in scope.queries)
    # The VALUES rows collapse.
    assert scope.queries[0].sql == f"INSERT INTO {TABLE} (id, data) VALUES (?, NULL)"
    assert scope.queries[0].fingerprint == scope.queries[2].fingerprint
    assert shape_cache_stats()["size"] == cached_before  # the text is not a cache key
    assert 1 <= long_shape_cache_size() <= LONG_SHAPE_CACHE_SIZE
    assert caplog.records
    for record in caplog.records:
        assert len(record.getMessage()) < MAX_MESSAGE
        assert len(record.__dict__["sql"]) <= MAX_SHAPE_CHARS


def test_long_distinct_shapes_are_cut_and_their_cache_stays_at_its_cap() -> None:
    columns = ", ".join(f"t.column_number_{i}" for i in range(600))
    for n in range(LONG_SHAPE_CACHE_SIZE + 50):
        text_ = f"SELECT {columns}, {n} AS tag_{n} FROM t"
        assert len(text_) > MAX_KEYED_CHARS
        shape = shape_of(text_)
        assert len(shape.sql) <= MAX_SHAPE_CHARS
        assert shape.sql.endswith(" ...")
    assert long_shape_cache_size() == LONG_SHAPE_CACHE_SIZE
    # The cut shapes still have fingerprints of their own: the full shape is hashed.
    a, b = (shape_of(f"SELECT {columns}, x{n} FROM t") for n in (1, 2))
    assert a.sql == b.sql
    assert a.fingerprint != b.fingerprint


def test_binary_parameters_and_bytes_that_are_not_utf8(engine: Engine, profiler: Profiler) -> None:
    every_byte = bytes(range(256))
    with profiler.scope("blobs") as scope, engine.begin() as conn:
        conn.execute(
            text(f"INSERT INTO {TABLE} (id, data) VALUES (:id, :data)"),
            [{"id": i, "data": every_byte * (i + 1)} for i in range(3)],
        )
        for _ in range(2):  # a duplicate: the bytes are hashed, not kept
            got = conn.execute(
                text(f"SELECT id FROM {TABLE} WHERE data = :d"), {"d": b"\xff\xfe\x00"}
            ).all()
        assert got == []
        conn.execute(text(f"DELETE FROM {TABLE}"))
    assert scope.query_count == 4
    assert "duplicate_query" in {f.kind for f in scope.findings}
    assert all(q.parameters is None for q in scope.queries)


def test_a_statement_the_driver_cannot_encode_is_the_app_error(
    engine: Engine, profiler: Profiler
) -> None:
    with profiler.scope("bad text") as scope, engine.connect() as conn:
        with pytest.raises((UnicodeEncodeError, exc.DBAPIError)):
            conn.exec_driver_sql("SELECT '\udcff' AS lone_surrogate")
        conn.rollback()
    assert scope.query_count in (0, 1)  # some drivers encode before the dialect sees it


def test_ddl_driver_sql_and_keyword_like_identifiers(engine: Engine, profiler: Profiler) -> None:
    quote = "`" if engine.dialect.name in ("mysql", "mariadb") else '"'
    name, column = f"{quote}select_{os.getpid():x}{quote}", f"{quote}from{quote}"
    with profiler.scope("ddl") as scope, engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} ({column} INTEGER, {quote}where{quote} TEXT)")
        conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {quote}order{quote} INTEGER")
        conn.execute(
            text(
                f"/* DELETE FROM {TABLE} */ SELECT {column} FROM {name} "
                f"WHERE {quote}where{quote} = :w -- DROP TABLE {TABLE}\n"
            ),
            {"w": "x"},
        )
        conn.exec_driver_sql(f"DROP TABLE {name}")
    operations = [q.operation for q in scope.queries]
    assert operations == ["OTHER", "OTHER", "SELECT", "OTHER"]
    select = scope.queries[2].sql
    assert select == f"SELECT {column} FROM {name} WHERE {quote}where{quote} = ?"


def test_several_statements_in_one_string(engine: Engine, profiler: Profiler) -> None:
    with profiler.scope("multi") as scope, engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT 1; SELECT 2")  # psycopg runs both, returns the last
        else:  # sqlite3 and pymysql (without CLIENT.MULTI_STATEMENTS) refuse
            with pytest.raises(exc.DBAPIError):
                conn.exec_driver_sql("SELECT 1; SELECT 2")
        conn.rollback()
    [query] = scope.queries
    assert query.sql == "SELECT ?; SELECT ?"
    assert (query.error is None) == (engine.dialect.name == "postgresql")


def test_copy_on_psycopg(profiler: Profiler) -> None:
    require_server(PG_SYNC_URL)
    engine = create_engine(PG_SYNC_URL)
    try:
        with profiler.scope("copy") as scope:
            with engine.connect() as conn:
                # Through SQLAlchemy: psycopg refuses COPY in execute(); the app sees its error
                # (and the connection is left in COPY mode: it must be thrown away).
                with pytest.raises(exc.DBAPIError, match="COPY"):
                    conn.exec_driver_sql("COPY (SELECT 1) TO STDOUT")
                conn.invalidate()
            with engine.connect() as conn:
                # Through the driver itself: queryprof does not see it, and does not break it.
                cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
                with cursor.copy("COPY (SELECT generate_series(1, 3)) TO STDOUT") as copy:
                    rows = [bytes(row) for row in copy]
                assert conn.exec_driver_sql("SELECT 4").scalar_one() == 4
                conn.rollback()
    finally:
        engine.dispose()
    assert b"".join(rows) == b"1\n2\n3\n"
    assert [(q.sql, q.error is not None) for q in scope.queries] == [
        ("COPY(SELECT ?) TO STDOUT", True),
        ("SELECT ?", False),
    ]


# -- odd ASGI traffic ---------------------------------------------------------------------------


class Boom(Exception):
    pass


async def _call(app: Any, scope: dict[str, Any], messages: list[dict[str, Any]]) -> list[Any]:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _http(method: str, path: str = "/x", **extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "server": ("t", 80),
        "client": ("c", 1),
        **extra,
    }


async def test_odd_asgi_traffic_passes_through_unchanged() -> None:
    profiler = Profiler(registry=CollectorRegistry(), log_findings=False)
    closed: list[Scope] = []
    profiler.on_scope_close(closed.append)
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        if scope["type"] == "lifespan":
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})
            return
        if scope["path"] == "/boom":
            raise Boom("before any header was sent")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["method"].encode()})

    wrapped = QueryProfilerMiddleware(app, profiler=profiler)
    errors_before = internal_error_count()
    lifespan = await _call(wrapped, {"type": "lifespan"}, [{"type": "lifespan.startup"}])
    websocket = await _call(
        wrapped, {**_http("GET"), "type": "websocket"}, [{"type": "websocket.connect"}]
    )
    odd = [
        await _call(wrapped, _http(method), [{"type": "http.request"}])
        for method in ("PROPFIND", "BREW", "get", "M" * 300)
    ]
    mounted = await _call(
        wrapped, _http("GET", "/api/v1/x", root_path="/api/v1"), [{"type": "http.request"}]
    )
    with pytest.raises(Boom, match="before any header"):
        await _call(wrapped, _http("GET", "/boom"), [{"type": "http.request"}])

    assert lifespan == [{"type": "lifespan.startup.complete"}]
    assert websocket == [{"type": "websocket.close", "code": 1000}]
    assert [sent[1]["body"] for sent in odd] == [b"PROPFIND", b"BREW", b"get", b"M" * 300]
    assert mounted[0]["status"] == 200
    assert seen == ["lifespan", "websocket", *["http"] * 6]
    # One scope per HTTP request, each closed; methods outside the known set share one name.
    assert len(closed) == 6
    assert all(s.closed for s in closed)
    assert [s.name for s in closed[:4]] == ["_OTHER __unmatched__"] * 4
    assert internal_error_count() == errors_before
