"""OpenTelemetry: the request summary and finding events on real spans, through real apps.

Spans and log records go to the SDK's in-memory exporters, installed as the global
providers for the length of one test by the ``otel`` fixture (conftest.py). Apps are the
example blog on SQLite (every finding kind is one of its endpoints) and small apps on
PostgreSQL and MariaDB for the SQL route tags, whose proof is the statement text the
server itself reports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import sqlalchemy
from fastapi import FastAPI
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import SpanKind
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from conftest import (
    MYSQL_URL,
    PG_SYNC_URL,
    PG_URL,
    Telemetry,
    profiler_factory,
    recorder,
    require_server,
)
from queryprof import Profiler, QueryProfilerMiddleware
from queryprof.export.otel import finding_attributes, tag_query_span
from queryprof.fingerprint import shape_of
from queryprof.sqlcomment import route_comment, tag

SQLITE = "sqlite+aiosqlite:///:memory:"
SA_21 = sqlalchemy.__version__.startswith("2.1")


@pytest.fixture
def profilers() -> Iterator[Callable[..., Profiler]]:
    yield from profiler_factory(explain=False)


@asynccontextmanager
async def blog(
    profiler: Profiler, *, asgi_instrumentation: bool = False, **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    from examples.blog.app import create_app

    app = create_app(SQLITE, profiler=profiler, **options)
    if asgi_instrumentation:
        # Added last, so outermost: FastAPI sees it and turns its own tracing off.
        app.add_middleware(OpenTelemetryMiddleware)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client,
    ):
        yield client


def events_of(span: ReadableSpan) -> dict[str, dict[str, Any]]:
    names = [e.name for e in span.events]
    assert len(names) == len(set(names)), f"an event is repeated: {names}"
    return {e.name: dict(e.attributes or {}) for e in span.events}


def without_duration(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if k != "queryprof.finding.duration"}


# --------------------------------------------------------------------------- the request span

KIND_ENDPOINTS = [
    ("n_plus_one", "GET", "/authors", {}),
    ("duplicate_query", "GET", "/posts/1/duplicate", {}),
    ("repeated_write", "POST", "/authors/1/bulk-comments?count=6", {}),
    ("slow_query", "GET", "/reports/slow?seconds=0.05", {"slow_query_threshold": 0.02}),
    ("long_transaction", "POST", "/posts/1/views?hold=0.3", {"long_transaction_threshold": 0.2}),
]


@pytest.mark.parametrize(("kind", "method", "path", "settings"), KIND_ENDPOINTS)
async def test_each_finding_kind_is_one_event_on_fastapis_server_span(
    otel: Telemetry,
    profilers: Callable[..., Profiler],
    kind: str,
    method: str,
    path: str,
    settings: dict[str, Any],
) -> None:
    profiler = profilers(**settings)
    closed = recorder(profiler)
    async with blog(profiler) as client:
        response = await client.request(method, path)
    assert response.status_code < 300, response.text
    (scope,) = closed
    (finding,) = [f for f in scope.findings if f.kind == kind]

    span = otel.server_span()
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "fastapi"  # FastAPI's native telemetry
    attributes = dict(span.attributes or {})
    assert attributes["queryprof.db.query_count"] == scope.query_count
    assert attributes["queryprof.db.duration"] == pytest.approx(scope.db_time)
    assert attributes[f"queryprof.findings.{kind}"] == 1
    events = events_of(span)
    assert without_duration(events[f"queryprof.{kind}"]) == without_duration(
        finding_attributes(finding)
    )
    assert set(events) == {f"queryprof.{f.kind}" for f in scope.findings}


async def test_the_n_plus_one_event_names_relationship_location_and_fix(
    otel: Telemetry, profilers: Callable[..., Profiler]
) -> None:
    profiler = profilers()
    closed = recorder(profiler)
    async with blog(profiler) as client:
        assert (await client.get("/authors")).status_code == 200
    span = otel.server_span()
    assert span.name == "GET /authors"
    attributes = dict(span.attributes or {})
    assert {k: v for k, v in attributes.items() if k.startswith("queryprof.findings.")} == {
        "queryprof.findings.n_plus_one": 1,
        "queryprof.findings.duplicate_query": 0,
        "queryprof.findings.repeated_write": 0,
        "queryprof.findings.slow_query": 0,
        "queryprof.findings.long_transaction": 0,
    }
    assert attributes["queryprof.db.query_count"] == 21
    event = events_of(span)["queryprof.n_plus_one"]
    (finding,) = closed[0].findings
    assert event["queryprof.finding.kind"] == "n_plus_one"
    assert event["queryprof.finding.count"] == 20
    assert event["queryprof.finding.duration"] > 0
    assert event["queryprof.relationship"] == "Author.posts"
    assert event["queryprof.suggestion"] == "selectinload(Author.posts)"
    assert str(event["queryprof.location"]).startswith("examples/blog/routes.py:")
    assert str(event["queryprof.location"]).endswith(" in list_authors")
    assert event["queryprof.fingerprint"] == finding.fingerprint
    assert len(str(event["queryprof.fingerprint"])) == 16
    assert str(event["db.query.summary"]).startswith("SELECT blog_posts.id")
    assert "WHERE ? = blog_posts.author_id" in str(event["db.query.summary"])


async def test_a_request_without_findings_gets_the_summary_and_no_event(
    otel: Telemetry, profilers: Callable[..., Profiler]
) -> None:
    profiler = profilers()
    async with blog(profiler) as client:
        assert (await client.get("/authors/eager")).status_code == 200
    span = otel.server_span()
    assert span.events == ()
    assert dict(span.attributes or {})["queryprof.db.query_count"] == 2


async def test_the_asgi_instrumentations_server_span_gets_the_same(
    otel: Telemetry, profilers: Callable[..., Profiler]
) -> None:
    profiler = profilers()
    closed = recorder(profiler)
    async with blog(profiler, asgi_instrumentation=True) as client:
        assert (await client.get("/authors")).status_code == 200
    span = otel.server_span()  # exactly one: FastAPI stood down for the instrumentation
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "opentelemetry.instrumentation.asgi"
    attributes = dict(span.attributes or {})
    assert attributes["queryprof.db.query_count"] == closed[0].query_count == 21
    assert attributes["queryprof.findings.n_plus_one"] == 1
    assert list(events_of(span)) == ["queryprof.n_plus_one"]


@pytest.mark.parametrize("output", ["log", "both"])
async def test_findings_as_log_events(
    otel: Telemetry, profilers: Callable[..., Profiler], output: str
) -> None:
    profiler = profilers(opentelemetry_findings=output)
    closed = recorder(profiler)
    async with blog(profiler) as client:
        assert (await client.get("/authors")).status_code == 200
    span = otel.server_span()
    (finding,) = closed[0].findings
    records = [r.log_record for r in otel.logs.get_finished_logs()]
    (record,) = [r for r in records if r.event_name == "queryprof.n_plus_one"]
    assert without_duration(dict(record.attributes or {})) == without_duration(
        finding_attributes(finding)
    )
    assert record.body == str(finding)
    assert record.trace_id == span.context.trace_id
    assert record.span_id == span.context.span_id
    assert list(events_of(span)) == (["queryprof.n_plus_one"] if output == "both" else [])
    assert dict(span.attributes or {})["queryprof.findings.n_plus_one"] == 1


async def test_a_slow_querys_plan_follows_on_a_span_under_the_request(
    otel: Telemetry, profilers: Callable[..., Profiler]
) -> None:
    profiler = profilers(slow_query_threshold=0.02, explain=True)
    closed = recorder(profiler)
    async with blog(profiler) as client:
        assert (await client.get("/reports/slow?seconds=0.05")).status_code == 200
        assert await profiler.flush(timeout=30)
    server = otel.server_span()
    (finding,) = [f for f in closed[0].findings if f.kind == "slow_query"]
    assert finding.plan is not None
    assert finding.plan.status == "ok", finding.plan
    assert "queryprof.plan.status" not in events_of(server)["queryprof.slow_query"]
    (late,) = [s for s in otel.finished() if s.name == "queryprof.plan"]
    assert late.parent is not None
    assert late.parent.span_id == server.context.span_id
    assert late.context.trace_id == server.context.trace_id
    attributes = dict(late.attributes or {})
    assert attributes["queryprof.fingerprint"] == finding.fingerprint
    assert attributes["queryprof.plan.status"] == "ok"
    assert attributes["queryprof.plan.summary"] == str(finding.plan)


async def test_exemplars_carry_the_request_spans_trace_id(
    otel: Telemetry, profilers: Callable[..., Profiler]
) -> None:
    from prometheus_client import CollectorRegistry

    profiler = profilers(registry=CollectorRegistry())
    async with blog(profiler) as client:
        assert (await client.get("/authors")).status_code == 200
        trace_id = format(otel.server_span().context.trace_id, "032x")
        exposition = await client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    lines = [
        line
        for line in exposition.text.splitlines()
        if line.startswith("queryprof_http_request_queries_bucket")
        and 'http_route="/authors"' in line
        and "#" in line
    ]
    assert lines, exposition.text
    assert all(f'trace_id="{trace_id}"' in line for line in lines), lines


@pytest.mark.parametrize("setting", [{"opentelemetry": False}, {"enabled": False}])
async def test_nothing_on_spans_when_turned_off(
    otel: Telemetry, profilers: Callable[..., Profiler], setting: dict[str, Any]
) -> None:
    profiler = profilers(**setting)
    async with blog(profiler) as client:
        assert (await client.get("/authors")).status_code == 200
    span = otel.server_span()
    assert span.events == ()
    assert not [k for k in span.attributes or {} if k.startswith("queryprof.")]
    assert not otel.logs.get_finished_logs()


async def test_a_span_that_is_not_sampled_costs_nothing_and_gets_nothing(
    profilers: Callable[..., Profiler],
) -> None:
    """No SDK at all (the API's non-recording spans): the middleware keeps no span."""
    profiler = profilers(opentelemetry=True)
    closed = recorder(profiler)
    async with blog(profiler) as client:
        assert (await client.get("/authors")).status_code == 200
    assert not [k for k in closed[0].attributes if k.startswith("queryprof.otel")]
    assert [f.kind for f in closed[0].findings] == ["n_plus_one"]


def test_without_opentelemetry_installed_auto_is_off_and_true_says_what_to_install() -> None:
    program = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # import opentelemetry now raises ImportError
        import asyncio, httpx
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route
        from queryprof import Profiler, QueryProfilerMiddleware

        try:
            Profiler(opentelemetry=True)
        except ImportError as exc:
            print("error:", exc)
        engine = create_async_engine("sqlite+aiosqlite:///:memory:")
        profiler = Profiler(log_findings=False, explain=False)
        profiler.instrument(engine)
        closed = []
        profiler.on_scope_close(closed.append)

        async def endpoint(request):
            async with engine.connect() as conn:
                for _ in range(6):
                    await conn.execute(text("SELECT 1"))
            return PlainTextResponse("ok")

        app = Starlette(routes=[Route("/", endpoint)])
        app.add_middleware(QueryProfilerMiddleware, profiler=profiler)

        async def main():
            transport = httpx.ASGITransport(app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                print("status:", (await c.get("/")).status_code)

        asyncio.run(main())
        print("queries:", closed[0].query_count, [f.kind for f in closed[0].findings])
        print("otel modules:", sorted(m for m in sys.modules if m.startswith("opentelemetry")))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("error: opentelemetry=True needs")
    assert "pip install 'queryprof[otel]'" in lines[0]
    assert lines[1:] == [
        "status: 200",
        "queries: 6 ['duplicate_query']",
        "otel modules: ['opentelemetry']",
    ]


# --------------------------------------------------------------------------- per-query spans


async def test_opentelemetry_sqlalchemy_query_spans_get_the_fingerprint(
    otel: Telemetry, profilers: Callable[..., Profiler]
) -> None:
    """The instrumentation pins SQLAlchemy < 2.1; on 2.1 this checks the documented way
    past the pin (``skip_dep_check=True``)."""
    profiler = profilers()
    closed = recorder(profiler)
    instrumentor = SQLAlchemyInstrumentor()

    def instrument(engine: AsyncEngine) -> None:
        instrumentor.instrument(
            engine=engine.sync_engine, tracer_provider=otel.tracer_provider, skip_dep_check=SA_21
        )

    try:
        async with blog(profiler, on_engine=instrument) as client:
            otel.spans.clear()  # the schema and seed statements of the lifespan
            assert (await client.get("/posts?page=1")).status_code == 200
    finally:
        instrumentor.uninstrument()
    (scope,) = closed
    server = otel.server_span()
    queries = [
        s
        for s in otel.finished()
        if s.kind is SpanKind.CLIENT and "db.statement" in (s.attributes or {})
    ]  # the instrumentation's "connect" span has no statement
    assert len(queries) == scope.query_count == 5  # one span per statement, each ended
    assert [dict(s.attributes or {})["queryprof.fingerprint"] for s in queries] == [
        q.fingerprint for q in scope.queries
    ]
    for span in queries:
        assert span.context.trace_id == server.context.trace_id
        statement = str(dict(span.attributes or {}).get("db.statement", ""))
        assert (
            shape_of(statement).fingerprint == dict(span.attributes or {})["queryprof.fingerprint"]
        )


# --------------------------------------------------------------------------- SQL route tags


def test_the_route_tag_is_sqlcommenter_style_and_leaves_commented_sql_alone() -> None:
    comment = route_comment("/authors/{author_id}")
    assert comment == " /*route='/authors/{author_id}'*/"
    assert tag("SELECT 1", comment) == "SELECT 1 /*route='/authors/{author_id}'*/"
    assert tag("SELECT 1;", comment) == "SELECT 1 /*route='/authors/{author_id}'*/;"
    assert tag("SELECT 1 /* mine */", comment) == "SELECT 1 /* mine */"
    assert tag("SELECT 1 -- mine", comment) == "SELECT 1 -- mine"
    # Values that would need a % (a placeholder to format-paramstyle drivers) or a quote,
    # or that could end the comment, are not tagged.
    assert route_comment("/a b") is None
    assert route_comment("/it's") is None
    assert route_comment("/x*/y") is None
    tagged = "SELECT a FROM t WHERE b = 1" + (comment or "")
    assert shape_of(tagged).fingerprint == shape_of("SELECT a FROM t WHERE b = 1").fingerprint


ECHO = {
    "postgresql": "SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()",
    "mysql": "SELECT info FROM information_schema.processlist WHERE id = connection_id()",
}


def echo_app(engine: AsyncEngine, profiler: Profiler) -> FastAPI:
    """The database echoes the text of the statement it is running: the tag, as received."""
    app = FastAPI()
    echo = text(ECHO["mysql" if engine.dialect.name in ("mysql", "mariadb") else "postgresql"])

    @app.get("/echo/{n}")
    async def route_echo(n: int) -> dict[str, str]:
        async with engine.begin() as conn:
            received = (await conn.execute(echo)).scalar_one()
        return {"received": received}

    app.add_middleware(QueryProfilerMiddleware, profiler=profiler)
    return app


@pytest.mark.parametrize("url", [PG_URL, PG_SYNC_URL, MYSQL_URL])
@pytest.mark.parametrize("tags", [True, False])
async def test_the_database_receives_the_route_tag(
    profilers: Callable[..., Profiler], url: str, tags: bool
) -> None:
    require_server(url)
    engine = create_async_engine(url)  # asyncpg, psycopg (async), aiomysql
    profiler = profilers(sql_route_tags=tags)
    profiler.instrument(engine)
    closed = recorder(profiler)
    try:
        app = echo_app(engine, profiler)
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            received = [(await client.get(f"/echo/{n}")).json()["received"] for n in (1, 2)]
    finally:
        await engine.dispose()
    for text_received in received:
        assert text_received.endswith("/*route='/echo/{n}'*/") is tags, text_received
    assert [s.query_count for s in closed] == [1, 1]
    assert (
        closed[0].queries[0].fingerprint == shape_of(ECHO_SHAPES[engine.dialect.name]).fingerprint
    )


ECHO_SHAPES = {"postgresql": ECHO["postgresql"], "mysql": ECHO["mysql"], "mariadb": ECHO["mysql"]}


async def test_a_scope_outside_http_reports_on_the_span_current_when_it_closes(
    otel: Telemetry, profilers: Callable[..., Profiler]
) -> None:
    engine = create_async_engine(SQLITE)
    profiler = profilers()
    profiler.instrument(engine)
    tracer = otel.tracer_provider.get_tracer("nightly")
    try:
        with tracer.start_as_current_span("nightly-import"):
            async with profiler.scope("nightly-import") as scope, engine.connect() as conn:
                for i in range(6):
                    await conn.execute(text("SELECT :i"), {"i": i})
    finally:
        await engine.dispose()
    (span,) = otel.finished()
    assert dict(span.attributes or {})["queryprof.db.query_count"] == 6
    (finding,) = scope.findings
    assert finding.kind == "n_plus_one"
    assert events_of(span) == {"queryprof.n_plus_one": finding_attributes(finding)}


def test_query_span_tagging_degrades_silently_when_the_internals_differ() -> None:
    class Context:
        pass

    context = Context()
    tag_query_span(context, "0123456789abcdef")  # no span at all
    context._otel_span = "not a span"  # type: ignore[attr-defined]
    tag_query_span(context, "0123456789abcdef")
    provider = TracerProvider()
    span = provider.get_tracer("t").start_span("q")
    context._otel_span = span  # type: ignore[attr-defined]
    tag_query_span(context, "0123456789abcdef")
    span.end()
    assert dict(span.attributes or {}) == {"queryprof.fingerprint": "0123456789abcdef"}
