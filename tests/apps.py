"""Small ASGI applications (and an in-process uvicorn server) for tests/test_middleware.py.

Nothing here imports from queryprof except where an app needs the middleware: the apps are
ordinary FastAPI/Starlette apps, profiled by the middleware the test adds.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import uvicorn
from fastapi import APIRouter, BackgroundTasks, FastAPI, HTTPException, WebSocket
from fastapi.responses import PlainTextResponse, StreamingResponse
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import Mount, Route

from queryprof import Profiler, QueryProfilerMiddleware, current_scope

MODES = ("async", "interleave", "gather", "sync")


class Boom(Exception):
    """The exception the lifecycle app's failing endpoint raises."""


# --------------------------------------------------------------------------- the blog


def create_blog_app(database_url: str, *, profiler: Profiler) -> FastAPI:
    """``examples.blog.app.create_app`` (the repository root is on ``sys.path``: pyproject)."""
    from examples.blog.app import create_app

    return create_app(database_url, profiler=profiler)


# --------------------------------------------------------------------------- uvicorn


@asynccontextmanager
async def serve(app: Any, **config: Any) -> AsyncIterator[str]:
    """Run ``app`` under a real uvicorn server on 127.0.0.1 (a free port); yield its base URL."""
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "log_level": "critical",
        "lifespan": "auto",
        "timeout_graceful_shutdown": 3,
        **config,
    }
    server = uvicorn.Server(uvicorn.Config(app, **options))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()  # the server failed to start: raise its error
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.005)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


# --------------------------------------------------------------------------- isolation


def load_paths(counts: Iterable[int], copies: int) -> dict[str, int]:
    """``{"/gather/17/b": 17, ...}``: each load path and the statements its request runs."""
    return {
        f"/{mode}/{n}/{chr(ord('a') + copy)}": n
        for n in counts
        for mode in MODES
        for copy in range(copies)
    }


def load_app(async_engine: AsyncEngine, sync_engine: Engine, paths: dict[str, int]) -> FastAPI:
    """One literal route per load path: ``GET /{mode}/{n}/{copy}`` runs exactly n statements.

    The route itself (``scope.route == "/gather/17/b"``) says which request a scope belongs
    to and how many statements it must hold, without asking queryprof anything.

    * ``async``: n statements one after the other on one connection;
    * ``interleave``: the same with ``await asyncio.sleep(0)`` between statements, so that
      every request in flight runs a statement between two of ours;
    * ``gather``: n statements spread over three tasks (``asyncio.gather``), each on its own
      connection;
    * ``sync``: a ``def`` endpoint (Starlette's threadpool) on the sync engine.
    """
    app = FastAPI()
    app.state.in_flight = app.state.peak = 0
    lock = threading.Lock()

    @contextmanager
    def in_flight() -> Iterator[None]:
        """How many requests are inside an endpoint at once: the test's proof of overlap."""
        with lock:
            app.state.in_flight += 1
            app.state.peak = max(app.state.peak, app.state.in_flight)
        try:
            yield
        finally:
            with lock:
                app.state.in_flight -= 1

    async def run_async(n: int, *, interleave: bool) -> None:
        async with async_engine.connect() as conn:
            for i in range(n):
                await conn.execute(text("SELECT CAST(:i AS INTEGER)"), {"i": i})
                if interleave:
                    await asyncio.sleep(0)

    def make(mode: str, n: int) -> Any:
        if mode == "sync":

            def sync_endpoint() -> dict[str, Any]:
                with in_flight(), sync_engine.connect() as conn:
                    for i in range(n):
                        conn.execute(text("SELECT CAST(:i AS INTEGER)"), {"i": i})
                return {"mode": mode, "n": n}

            return sync_endpoint

        async def endpoint() -> dict[str, Any]:
            with in_flight():
                if mode == "gather":
                    parts = [n // 3, n // 3, n - 2 * (n // 3)]
                    await asyncio.gather(*(run_async(k, interleave=True) for k in parts))
                else:
                    await run_async(n, interleave=mode == "interleave")
            return {"mode": mode, "n": n}

        return endpoint

    for path, n in paths.items():
        app.add_api_route(path, make(path.split("/")[1], n), methods=["GET"])
    return app


# --------------------------------------------------------------------------- route templates


def routes_app(profiler: Profiler, **fastapi_options: Any) -> FastAPI:
    """A FastAPI app exercising every way a request finds (or misses) its route."""
    app = FastAPI(**fastapi_options)

    @app.get("/authors/{author_id}")
    async def get_author(author_id: int) -> dict[str, int]:
        if author_id == 0:
            raise HTTPException(404, "no author 0")  # the endpoint's own 404
        return {"id": author_id}

    # A router with a prefix, included in a router with a prefix, included with a prefix.
    comments = APIRouter(prefix="/comments")

    @comments.get("/{comment_id}")
    async def get_comment(comment_id: int) -> dict[str, int]:
        return {"id": comment_id}

    posts = APIRouter(prefix="/posts/{post_id}")
    posts.include_router(comments)
    app.include_router(posts, prefix="/blog")

    # A FastAPI sub-application mounted at a fixed prefix.
    admin = FastAPI()

    @admin.get("/users/{user_id}")
    async def get_user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    app.mount("/admin", admin)

    # A mount whose prefix holds a path parameter.
    tenant = FastAPI()

    @tenant.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    app.mount("/tenants/{tenant}", tenant)

    # A plain ASGI app with no routes of its own (StaticFiles-like).
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("raw")(scope, receive, send)

    app.mount("/static", raw)

    app.add_middleware(QueryProfilerMiddleware, profiler=profiler)
    return app


def starlette_app(profiler: Profiler) -> Starlette:
    """The same questions for a plain Starlette app: Route, Mount(routes=...), Mount(app=...)
    of a Starlette app and of a bare ASGI app."""

    async def user(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"user {request.path_params['user_id']}")

    async def obj(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"object {request.path_params['object_id']}")

    async def page(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"page {request.path_params['page_id']}")

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("raw")(scope, receive, send)

    docs = Starlette(routes=[Route("/pages/{page_id}", page)])
    return Starlette(
        routes=[
            Route("/users/{user_id}", user),
            Mount("/files/{bucket}", routes=[Route("/objects/{object_id}", obj)]),
            Mount("/docs", app=docs),
            Mount("/static", app=raw),  # a plain ASGI app with no routes (StaticFiles-like)
        ],
        middleware=[Middleware(QueryProfilerMiddleware, profiler=profiler)],
    )


# --------------------------------------------------------------------------- lifecycle


def lifecycle_app(engine: AsyncEngine, sync_engine: Engine, events: dict[str, Any]) -> FastAPI:
    """Endpoints that end in every way a request can end. ``events`` records what ran."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events["lifespan_scope"] = current_scope()
        await run(1)
        events["started"] = True
        yield
        events["stopped"] = True

    app = FastAPI(lifespan=lifespan)

    async def run(n: int) -> None:
        async with engine.connect() as conn:
            for i in range(n):
                await conn.execute(text("SELECT CAST(:i AS INTEGER)"), {"i": i})

    @app.get("/plain/{n}")
    async def plain(n: int) -> dict[str, int]:
        events.setdefault("current", []).append(current_scope())
        await run(n)
        return {"n": n}

    @app.get("/sync/{n}")
    def sync_plain(n: int) -> dict[str, int]:
        events.setdefault("current", []).append(current_scope())
        with sync_engine.connect() as conn:
            for i in range(n):
                conn.execute(text("SELECT CAST(:i AS INTEGER)"), {"i": i})
        return {"n": n}

    @app.get("/timed")
    async def timed() -> PlainTextResponse:
        await run(2)
        return PlainTextResponse("ok", headers={"Server-Timing": 'app;dur=1.5;desc="render"'})

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        await run(1)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                await run(1)  # statements made while the body streams
                yield f"chunk {i}\n".encode()
            events["stream_done"] = True

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/endless")
    async def endless() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            try:
                i = 0
                while True:
                    await run(1)
                    yield f"chunk {i}\n".encode()
                    i += 1
                    await asyncio.sleep(0.01)
            finally:
                events["endless_stopped"] = True

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/background")
    async def background(tasks: BackgroundTasks) -> dict[str, bool]:
        await run(1)

        async def later() -> None:
            await asyncio.sleep(0.02)
            await run(2)
            events["background_done"] = True

        tasks.add_task(later)
        return {"queued": True}

    @app.get("/boom")
    async def boom() -> None:
        await run(2)
        raise Boom("the endpoint failed")

    @app.websocket("/ws")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        events["ws_scope"] = current_scope()
        message = await websocket.receive_text()
        await run(1)
        await websocket.send_text(f"echo {message}")
        await websocket.close()

    return app
