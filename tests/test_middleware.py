"""QueryProfilerMiddleware through real ASGI: httpx's ASGITransport and a real uvicorn server.

Each test pins one behaviour: every request gets its own scope with exactly its own
statements, named by its route template; the scope closes once whatever the way the request
ends; the Server-Timing header; nesting; the example blog end to end; and never breaking the
application it watches.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, StaticPool

import queryprof
from apps import (
    Boom,
    create_blog_app,
    lifecycle_app,
    load_app,
    load_paths,
    routes_app,
    serve,
    starlette_app,
)
from conftest import PG_SYNC_URL, PG_URL, profiler_factory, recorder, require_server
from queryprof import Profiler, QueryProfilerMiddleware, Scope
from queryprof._guard import internal_error_count

TRANSPORTS = ("asgi", "uvicorn")


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def profilers() -> Iterator[Callable[..., Profiler]]:
    yield from profiler_factory()


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Under uvicorn the response reaches the client before the middleware has finished."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def asgi_client(app: Any, **transport: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app, **transport), base_url="http://testserver"
    )


@asynccontextmanager
async def client_for(app: Any, transport: str, **server: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to ``app`` in process (ASGITransport) or over real HTTP."""
    if transport == "asgi":
        async with asgi_client(app) as client:
            yield client
        return
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    async with (
        serve(app, **server) as url,
        httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client,
    ):
        yield client


def sqlite_memory_engines() -> tuple[AsyncEngine, Engine]:
    """An in-memory database each (one connection, shared): for one request at a time."""
    async_engine = create_async_engine("sqlite+aiosqlite:///:memory:", poolclass=StaticPool)
    sync_engine = create_engine(
        "sqlite:///:memory:", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    return async_engine, sync_engine


SERVER_TIMING = re.compile(r'^db;dur=(?P<ms>\d+(?:\.\d+)?);desc="(?P<n>\d+) queries"$')


def db_timing(response: httpx.Response) -> re.Match[str]:
    values = [v for v in response.headers.get_list("server-timing") if v.startswith("db;")]
    assert len(values) == 1, response.headers.get_list("server-timing")
    match = SERVER_TIMING.match(values[0])
    assert match is not None, values[0]
    return match


# --------------------------------------------------------------------------- 1. isolation

# 4 modes x 25 counts x 2 copies: 200 concurrent requests, 2,600 statements.
LOAD_PATHS = load_paths(range(1, 26), copies=2)


@pytest.fixture(params=["sqlite", "postgresql"])
async def load_engines(
    request: pytest.FixtureRequest, tmp_path: Any
) -> AsyncIterator[tuple[AsyncEngine, Engine]]:
    """A real database, async and sync engines, with pools big enough for the load test."""
    if request.param == "sqlite":
        path = tmp_path / "load.db"
        async_engine = create_async_engine(
            f"sqlite+aiosqlite:///{path}", pool_size=60, max_overflow=0
        )
        sync_engine = create_engine(
            f"sqlite:///{path}",
            pool_size=40,
            max_overflow=0,
            connect_args={"check_same_thread": False},
        )
    else:
        require_server(PG_URL)
        async_engine = create_async_engine(PG_URL, pool_size=20, max_overflow=0)
        sync_engine = create_engine(PG_SYNC_URL, pool_size=10, max_overflow=0)
    try:
        # Connect once outside any scope: SQLAlchemy's first-connect dialect setup is another
        # test's subject (test_first_request_is_not_charged_for_sqlalchemy_dialect_setup).
        async with async_engine.connect():
            pass
        with sync_engine.connect():
            pass
        yield async_engine, sync_engine
    finally:
        await async_engine.dispose()
        sync_engine.dispose()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_concurrent_requests_each_count_exactly_their_own_statements(
    load_engines: tuple[AsyncEngine, Engine],
    transport: str,
    profilers: Callable[..., Profiler],
) -> None:
    async_engine, sync_engine = load_engines
    profiler = profilers()
    profiler.instrument(async_engine, sync_engine)
    closed = recorder(profiler)
    app = load_app(async_engine, sync_engine, LOAD_PATHS)
    app.add_middleware(QueryProfilerMiddleware, profiler=profiler)
    expected = LOAD_PATHS
    paths = list(expected)
    random.Random(20240601).shuffle(paths)

    async with client_for(app, transport) as client:
        responses = await asyncio.gather(*(client.get(path) for path in paths))
        assert [r.status_code for r in responses] == [200] * len(paths)
        await wait_until(lambda: len(closed) >= len(paths))

    assert app.state.peak >= 20  # the requests really overlapped
    assert len(closed) == len(paths)  # one scope per request, each closed once
    assert all(scope.closed for scope in closed)
    counts = {scope.route: scope.query_count for scope in closed}
    assert counts.keys() == expected.keys()  # every request has its scope (no duplicates)
    wrong = {route: (n, expected[route]) for route, n in counts.items() if n != expected[route]}
    assert wrong == {}, "route: (counted, ran)"
    assert {scope.name for scope in closed} == {f"GET {path}" for path in paths}


@pytest.mark.parametrize("engine_kind", ["asyncpg", "psycopg"])
async def test_first_request_is_not_charged_for_sqlalchemy_dialect_setup(
    engine_kind: str, profilers: Callable[..., Profiler]
) -> None:
    """On its first connection SQLAlchemy asks the server for its version, current schema and
    settings (3 statements on PostgreSQL). The application did not run them: the request
    that happens to connect first must count its own statements only, like every other."""
    require_server(PG_URL)
    async_engine = create_async_engine(PG_URL, poolclass=NullPool)
    sync_engine = create_engine(PG_SYNC_URL, poolclass=NullPool)
    profiler = profilers()
    profiler.instrument(async_engine, sync_engine)
    closed = recorder(profiler)
    app = load_app(async_engine, sync_engine, load_paths([1], copies=1))
    app.add_middleware(QueryProfilerMiddleware, profiler=profiler)
    path = "/async/1/a" if engine_kind == "asyncpg" else "/sync/1/a"
    try:
        async with asgi_client(app) as client:
            first = await client.get(path)
            second = await client.get(path)
    finally:
        await async_engine.dispose()
        sync_engine.dispose()
    assert (first.status_code, second.status_code) == (200, 200)
    assert [scope.query_count for scope in closed] == [1, 1], [
        [q.sql for q in scope.queries] for scope in closed
    ]


# --------------------------------------------------------------------------- 2. route templates

ROUTE_CASES = [
    # (method, raw path, status, scope name)
    ("GET", "/authors/7", 200, "GET /authors/{author_id}"),
    ("GET", "/authors/0", 404, "GET /authors/{author_id}"),  # the endpoint's own 404
    ("GET", "/blog/posts/3/comments/9", 200, "GET /blog/posts/{post_id}/comments/{comment_id}"),
    ("GET", "/admin/users/5", 200, "GET /admin/users/{user_id}"),
    ("GET", "/tenants/acme/items/3", 200, "GET /tenants/{tenant}/items/{item_id}"),
    ("GET", "/nowhere/12", 404, "GET __unmatched__"),
    ("POST", "/authors/7", 405, "POST __unmatched__"),
    ("POST", "/blog/posts/3/comments/9", 405, "POST __unmatched__"),
    ("GET", "/authors/7/", 307, "GET __unmatched__"),
    ("GET", "/admin/nowhere/12", 404, "GET __unmatched__"),
    ("POST", "/admin/users/5", 405, "POST __unmatched__"),
    ("GET", "/admin/users/5/", 307, "GET __unmatched__"),
    ("GET", "/tenants/acme/nowhere/4", 404, "GET __unmatched__"),
]


@pytest.mark.parametrize(
    ("method", "path", "status", "name"), ROUTE_CASES, ids=[f"{c[0]} {c[1]}" for c in ROUTE_CASES]
)
async def test_scope_is_named_by_method_and_route_template(
    method: str, path: str, status: int, name: str, profilers: Callable[..., Profiler]
) -> None:
    profiler = profilers()
    closed = recorder(profiler)
    async with asgi_client(routes_app(profiler)) as client:
        response = await client.request(method, path)
    assert response.status_code == status
    assert [scope.name for scope in closed] == [name]
    assert closed[0].method == method
    assert closed[0].route == name.split(" ", 1)[1]


async def test_route_templates_over_real_http(profilers: Callable[..., Profiler]) -> None:
    profiler = profilers()
    closed = recorder(profiler)
    seen = []
    async with client_for(routes_app(profiler), "uvicorn") as client:
        for method, path, status, _ in ROUTE_CASES:
            response = await client.request(method, path)
            assert response.status_code == status, path
            await wait_until(lambda: len(closed) == len(seen) + 1)
            seen.append(closed[-1].name)
    assert seen == [name for *_, name in ROUTE_CASES]


@pytest.mark.parametrize("make_app", [routes_app, starlette_app], ids=["fastapi", "starlette"])
async def test_mounted_asgi_app_without_routes_is_named_by_its_mount(
    make_app: Callable[[Profiler], Any], profilers: Callable[..., Profiler]
) -> None:
    """A StaticFiles-like mount serves the request: it is matched, not ``__unmatched__``;
    named by its prefix once (never doubled), never by the file name."""
    profiler = profilers()
    closed = recorder(profiler)
    async with asgi_client(make_app(profiler)) as client:
        response = await client.get("/static/css/site-42.css")
    assert response.status_code == 200
    assert [scope.name for scope in closed] in (["GET /static"], ["GET /static/{path}"])


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/authors/7", "GET /authors/{author_id}"),
        ("/blog/posts/3/comments/9", "GET /blog/posts/{post_id}/comments/{comment_id}"),
        ("/admin/users/5", "GET /admin/users/{user_id}"),
        ("/tenants/acme/items/3", "GET /tenants/{tenant}/items/{item_id}"),
        ("/nowhere/12", "GET __unmatched__"),
    ],
)
async def test_root_path_set_by_the_server_stays_out_of_the_template(
    transport: str, path: str, name: str, profilers: Callable[..., Profiler]
) -> None:
    profiler = profilers()
    closed = recorder(profiler)
    app = routes_app(profiler)
    if transport == "asgi":
        # The ASGI path holds the root_path; the router strips it.
        async with asgi_client(app, root_path="/api") as client:
            response = await client.get("/api" + path)
    else:
        # The proxy stripped /api; uvicorn adds it back to the path and sets root_path.
        async with client_for(app, "uvicorn", root_path="/api") as client:
            response = await client.get(path)
            await wait_until(lambda: len(closed) == 1)
    assert response.status_code == (404 if name.endswith("__unmatched__") else 200)
    assert [scope.name for scope in closed] == [name]


STARLETTE_CASES = [
    ("GET", "/users/7", 200, "GET /users/{user_id}"),
    ("GET", "/files/photos/objects/9", 200, "GET /files/{bucket}/objects/{object_id}"),
    ("GET", "/docs/pages/3", 200, "GET /docs/pages/{page_id}"),
    ("GET", "/nowhere/12", 404, "GET __unmatched__"),
    ("POST", "/users/7", 405, "POST __unmatched__"),
    ("GET", "/users/7/", 307, "GET __unmatched__"),
    ("GET", "/files/photos/nowhere/9", 404, "GET __unmatched__"),
    ("GET", "/docs/nowhere/3", 404, "GET __unmatched__"),
]


@pytest.mark.parametrize(
    ("method", "path", "status", "name"),
    STARLETTE_CASES,
    ids=[f"{c[0]} {c[1]}" for c in STARLETTE_CASES],
)
async def test_plain_starlette_app_scope_names(
    method: str, path: str, status: int, name: str, profilers: Callable[..., Profiler]
) -> None:
    profiler = profilers()
    closed = recorder(profiler)
    async with asgi_client(starlette_app(profiler)) as client:
        response = await client.request(method, path)
    assert response.status_code == status
    assert [scope.name for scope in closed] == [name]


async def test_a_thousand_distinct_urls_make_a_bounded_set_of_names(
    profilers: Callable[..., Profiler],
) -> None:
    profiler = profilers()
    closed = recorder(profiler)
    rng = random.Random(1000)
    shapes = [
        "/authors/{i}",
        "/blog/posts/{i}/comments/{j}",
        "/admin/users/{i}",
        "/tenants/t{i}x/items/{j}",
        "/missing/{i}",
        "/admin/missing/{i}",
        "/tenants/t{i}x/missing/{j}",
        "/authors/{i}/",
    ]
    paths = [
        shape.format(i=1000 + k, j=rng.randrange(10_000, 99_999))
        for k in range(125)
        for shape in shapes
    ]
    assert len(set(paths)) == 1000
    async with asgi_client(routes_app(profiler)) as client:
        for start in range(0, len(paths), 100):
            await asyncio.gather(*(client.get(path) for path in paths[start : start + 100]))
    assert len(closed) == 1000
    names = {scope.name for scope in closed}
    assert len(names) <= len(shapes), names
    assert not [n for n in names if re.search(r"\d", n)], names
    assert not [n for n in names if re.search(r"/t\d", n) or "missing" in n], names


# --------------------------------------------------------------------------- 3. lifecycle


@pytest.fixture
async def build_lifecycle(
    profilers: Callable[..., Profiler],
) -> AsyncIterator[Callable[..., dict[str, Any]]]:
    """Build the lifecycle app behind a new profiler with these settings.

    Returns ``app``, the ``closed`` scopes, the ``events`` the app records and the ``profiler``.
    """
    engines: list[tuple[AsyncEngine, Engine]] = []

    def build(**settings: Any) -> dict[str, Any]:
        async_engine, sync_engine = sqlite_memory_engines()
        engines.append((async_engine, sync_engine))
        profiler = profilers(**settings)
        profiler.instrument(async_engine, sync_engine)
        events: dict[str, Any] = {}
        app = lifecycle_app(async_engine, sync_engine, events)
        app.add_middleware(QueryProfilerMiddleware, profiler=profiler)
        return {"app": app, "closed": recorder(profiler), "events": events, "profiler": profiler}

    try:
        yield build
    finally:
        for async_engine, sync_engine in engines:
            await async_engine.dispose()
            sync_engine.dispose()


@pytest.fixture
def lifecycle(build_lifecycle: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    return build_lifecycle()


async def test_scope_closes_once_after_a_normal_response(lifecycle: dict[str, Any]) -> None:
    closed = lifecycle["closed"]
    async with asgi_client(lifecycle["app"]) as client:
        response = await client.get("/plain/4")
    assert response.json() == {"n": 4}
    assert len(closed) == 1
    assert closed[0].closed
    assert (closed[0].name, closed[0].query_count) == ("GET /plain/{n}", 4)


async def test_statements_made_while_streaming_count(lifecycle: dict[str, Any]) -> None:
    closed, events = lifecycle["closed"], lifecycle["events"]
    async with asgi_client(lifecycle["app"]) as client:
        response = await client.get("/stream")
    assert response.text == "chunk 0\nchunk 1\nchunk 2\n"
    assert events["stream_done"]
    assert len(closed) == 1
    assert closed[0].closed
    assert (closed[0].name, closed[0].query_count) == ("GET /stream", 4)


async def test_background_task_statements_count_and_scope_closes_after_them(
    lifecycle: dict[str, Any],
) -> None:
    closed, events = lifecycle["closed"], lifecycle["events"]
    done_at_close: list[bool] = []
    lifecycle["profiler"].on_scope_close(
        lambda scope: done_at_close.append(events.get("background_done", False))
    )
    async with asgi_client(lifecycle["app"]) as client:
        response = await client.get("/background")
    assert response.json() == {"queued": True}
    assert done_at_close == [True]
    assert len(closed) == 1
    assert (closed[0].name, closed[0].query_count) == ("GET /background", 3)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_endpoint_exception_propagates_and_scope_still_closes(
    lifecycle: dict[str, Any], transport: str
) -> None:
    closed = lifecycle["closed"]
    async with client_for(lifecycle["app"], transport) as client:
        if transport == "asgi":
            with pytest.raises(Boom, match="the endpoint failed"):
                await client.get("/boom")
        else:
            response = await client.get("/boom")
            assert response.status_code == 500
            await wait_until(lambda: len(closed) >= 1)
    assert len(closed) == 1
    assert closed[0].closed
    assert (closed[0].name, closed[0].query_count) == ("GET /boom", 2)


async def test_client_disconnect_mid_stream_closes_the_scope(lifecycle: dict[str, Any]) -> None:
    closed, events = lifecycle["closed"], lifecycle["events"]
    async with client_for(lifecycle["app"], "uvicorn") as client:
        received = []
        async with client.stream("GET", "/endless") as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                received.append(line)
                if len(received) == 3:
                    break  # leaving the block closes the connection mid-stream
        await wait_until(lambda: len(closed) >= 1)
        await asyncio.sleep(0.05)  # a second close would show up here
    assert received == ["chunk 0", "chunk 1", "chunk 2"]
    assert events["endless_stopped"]
    assert len(closed) == 1
    assert closed[0].closed
    assert closed[0].name == "GET /endless"
    assert closed[0].query_count >= 3


async def test_websocket_passes_through_without_a_scope(lifecycle: dict[str, Any]) -> None:
    closed, events = lifecycle["closed"], lifecycle["events"]
    incoming = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hello"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "ws",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "subprotocols": [],
        "state": {},
    }
    await lifecycle["app"](scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "echo hello"
    assert events["ws_scope"] is None
    assert closed == []


async def test_lifespan_passes_through_without_a_scope(lifecycle: dict[str, Any]) -> None:
    closed, events = lifecycle["closed"], lifecycle["events"]
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    await lifecycle["app"](scope, receive, send)
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert events["started"]
    assert events["stopped"]
    assert events["lifespan_scope"] is None
    assert closed == []


# --------------------------------------------------------------------------- 4. Server-Timing


async def test_server_timing_header_reports_the_request_statements(
    build_lifecycle: Callable[..., dict[str, Any]],
) -> None:
    built = build_lifecycle(server_timing=True)
    async with asgi_client(built["app"]) as client:
        three = await client.get("/plain/3")
        none = await client.get("/plain/0")
    timing = db_timing(three)
    assert timing["n"] == "3"
    assert 0 <= float(timing["ms"]) <= built["closed"][0].db_time * 1000 + 0.05
    assert db_timing(none)["n"] == "0"


async def test_server_timing_keeps_the_app_own_entries(
    build_lifecycle: Callable[..., dict[str, Any]],
) -> None:
    built = build_lifecycle(server_timing=True)
    async with asgi_client(built["app"]) as client:
        response = await client.get("/timed")
    values = response.headers.get_list("server-timing")
    assert 'app;dur=1.5;desc="render"' in values
    assert db_timing(response)["n"] == "2"
    assert len(values) == 2


async def test_no_server_timing_header_by_default(lifecycle: dict[str, Any]) -> None:
    async with asgi_client(lifecycle["app"]) as client:
        response = await client.get("/plain/2")
    assert response.status_code == 200
    assert "server-timing" not in response.headers
    assert lifecycle["closed"][0].query_count == 2


# --------------------------------------------------------------------------- 5. nesting


async def test_request_inside_an_open_scope_counts_toward_both(lifecycle: dict[str, Any]) -> None:
    profiler, closed = lifecycle["profiler"], lifecycle["closed"]
    async with asgi_client(lifecycle["app"]) as client:
        with profiler.scope("outer") as outer:
            response = await client.get("/plain/3")  # ASGITransport: the same task
            assert response.status_code == 200
            assert queryprof.current_scope() is outer
            assert outer.query_count == 3
            response = await client.get("/sync/2")
            assert response.status_code == 200
    requests = [scope for scope in closed if scope is not outer]
    assert [(s.name, s.query_count) for s in requests] == [
        ("GET /plain/{n}", 3),
        ("GET /sync/{n}", 2),
    ]
    assert outer.query_count == 5
    assert closed[-1] is outer
    assert queryprof.current_scope() is None


@pytest.mark.parametrize("path", ["/plain/1", "/sync/1"])
async def test_current_scope_in_an_endpoint_is_the_request_scope(
    lifecycle: dict[str, Any], path: str
) -> None:
    closed, events = lifecycle["closed"], lifecycle["events"]
    async with asgi_client(lifecycle["app"]) as client:
        response = await client.get(path)
    assert response.status_code == 200
    assert len(closed) == 1
    assert events["current"] == [closed[0]]
    assert events["current"][0] is closed[0]


# --------------------------------------------------------------------------- 6. the example blog


@asynccontextmanager
async def blog(profiler: Profiler) -> AsyncIterator[httpx.AsyncClient]:
    app = create_blog_app("sqlite+aiosqlite:///:memory:", profiler=profiler)
    async with app.router.lifespan_context(app), asgi_client(app) as client:
        yield client


async def test_blog_list_authors_has_an_n_plus_one_on_author_posts(
    profilers: Callable[..., Profiler],
) -> None:
    profiler = profilers()
    closed = recorder(profiler)
    async with blog(profiler) as client:
        response = await client.get("/authors")
    assert response.status_code == 200
    assert len(response.json()) == 20
    (scope,) = closed
    assert scope.name == "GET /authors"
    n_plus_one = [f for f in scope.findings if f.kind == "n_plus_one"]
    assert len(n_plus_one) == 1, scope.findings
    finding = n_plus_one[0]
    assert finding.relationship == "Author.posts"
    assert finding.count == 20
    assert finding.location is not None
    assert finding.location.startswith("examples/blog/routes.py:"), finding.location
    assert finding.location.endswith(" in list_authors"), finding.location


async def test_blog_eager_authors_has_no_finding(profilers: Callable[..., Profiler]) -> None:
    profiler = profilers()
    closed = recorder(profiler)
    async with blog(profiler) as client:
        response = await client.get("/authors/eager")
    assert response.status_code == 200
    (scope,) = closed
    assert scope.name == "GET /authors/eager"
    assert scope.findings == []


BLOG_COUNTS = [
    ("GET", "/authors", 200, "GET /authors", 21),
    ("GET", "/authors/eager", 200, "GET /authors/eager", 2),
    ("GET", "/authors/3", 200, "GET /authors/{author_id}", 1),
    ("GET", "/authors/999", 404, "GET /authors/{author_id}", 1),
    ("GET", "/posts?page=2&size=7", 200, "GET /posts", 5),
    ("GET", "/posts/4/duplicate", 200, "GET /posts/{post_id}/duplicate", 3),
    ("GET", "/posts/4/comments-loop", 200, "GET /posts/{post_id}/comments-loop", 3),
    ("GET", "/reports/slow?seconds=0.01", 200, "GET /reports/slow", 1),
    ("POST", "/posts/4/views?hold=0", 200, "POST /posts/{post_id}/views", 2),
    (
        "POST",
        "/authors/2/bulk-comments?count=10",
        201,
        "POST /authors/{author_id}/bulk-comments",
        12,
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "status", "name", "count"),
    BLOG_COUNTS,
    ids=[" ".join((c.values if hasattr(c, "values") else c)[:2]) for c in BLOG_COUNTS],
)
async def test_blog_query_counts_match_the_documented_ones(
    method: str,
    path: str,
    status: int,
    name: str,
    count: int,
    profilers: Callable[..., Profiler],
) -> None:
    profiler = profilers()
    closed = recorder(profiler)
    async with blog(profiler) as client:
        response = await client.request(method, path)
    assert response.status_code == status, response.text
    assert [(scope.name, scope.query_count) for scope in closed] == [(name, count)]


# --------------------------------------------------------------------------- 7. never break


async def test_a_raising_callback_leaves_the_response_unchanged(
    lifecycle: dict[str, Any],
) -> None:
    profiler, closed = lifecycle["profiler"], lifecycle["closed"]

    def explode(scope: Scope) -> None:
        raise RuntimeError("exporter down")

    profiler.on_scope_close(explode)
    errors = internal_error_count()
    async with asgi_client(lifecycle["app"]) as client:
        response = await client.get("/plain/2")
        streamed = await client.get("/stream")
    assert response.status_code == 200
    assert response.json() == {"n": 2}
    assert streamed.status_code == 200
    assert streamed.text == "chunk 0\nchunk 1\nchunk 2\n"
    assert [scope.query_count for scope in closed] == [2, 4]
    assert internal_error_count() == errors + 2
