"""Small apps for the metrics tests.

``multiprocess_app`` is imported by uvicorn worker processes (``--factory``), so importing
this module must stay cheap and free of side effects.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from queryprof import Profiler, QueryProfilerMiddleware

# The route templates of cardinality_app, as they must appear in http_route.
CARDINALITY_ROUTES = frozenset(
    ("/items/{item_id}", "/users/{user_id}/orders/{order_id}", "/things", "__unmatched__")
)


def memory_engine() -> AsyncEngine:
    return create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)


def cardinality_app(profiler: Profiler, engine: AsyncEngine) -> FastAPI:
    """Routes with path parameters, one that redirects a trailing slash, and 404s/405s."""
    app = FastAPI()

    async def one_statement(value: Any) -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT :v"), {"v": value})

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        await one_statement(item_id)
        if item_id.endswith("9"):
            raise HTTPException(404, "no such item")  # the endpoint's own 404: still its route
        return {"id": item_id}

    @app.get("/users/{user_id}/orders/{order_id}")
    async def order(user_id: int, order_id: int) -> dict[str, int]:
        await one_statement(order_id)
        return {"user": user_id, "order": order_id}

    @app.get("/things")
    async def things() -> list[int]:
        await one_statement(0)
        return []

    app.add_middleware(QueryProfilerMiddleware, profiler=profiler)
    app.add_route("/metrics", profiler.metrics_endpoint)
    return app


def multiprocess_app() -> FastAPI:
    """One uvicorn worker: ``PROMETHEUS_MULTIPROC_DIR`` is set, so every worker writes its
    metrics to the shared directory and ``/metrics`` serves their sum."""
    profiler = Profiler(log_findings=False)
    engine = memory_engine()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        profiler.instrument(engine)
        yield
        await engine.dispose()
        profiler.uninstrument()

    app = FastAPI(lifespan=lifespan)

    @app.get("/queries/{n}")
    async def queries(n: int) -> dict[str, int]:
        async with engine.connect() as conn:
            for i in range(n):
                await conn.execute(text("SELECT :i"), {"i": i})
        return {"pid": os.getpid(), "n": n}

    app.add_middleware(QueryProfilerMiddleware, profiler=profiler)
    app.add_route("/metrics", profiler.metrics_endpoint)
    return app


def exercise_pool(engine: Engine, state: Callable[[], tuple[float, float, float]]) -> None:
    """Checkouts, an overflow, an invalidation, a detach and a dispose on a pool of size 2
    with one overflow; ``state()`` must say (used, idle, max) after each step."""
    conns = [engine.connect() for _ in range(3)]
    for conn in conns:
        conn.execute(text("SELECT 1"))
    assert state() == (3, 0, 3)
    for conn in conns:
        conn.close()  # the third one back finds the pool full and is closed
    assert state() == (0, 2, 3)

    conn = engine.connect()
    assert state() == (1, 1, 3)
    conn.invalidate()  # the connection is closed; its slot comes back empty
    conn.close()
    assert state() == (0, 1, 3)
    with engine.connect() as conn:  # the idle one
        conn.detach()  # no longer the pool's
        assert state() == (0, 0, 3)
    with engine.connect(), engine.connect():  # both reconnect
        assert state() == (2, 0, 3)
    assert state() == (0, 2, 3)
    engine.dispose()
    assert state()[:2] == (0, 0)
