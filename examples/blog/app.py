"""Application factory of the blog example.

Importing this module has no side effects; ``examples.blog.main`` holds a ready-made
``app`` for ``uvicorn``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from examples.blog.db import create_engine, create_session_factory, resolve_database_url
from examples.blog.routes import authors, posts, reports
from examples.blog.seed import create_schema, seed_if_empty

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    import queryprof


def create_app(
    database_url: str | None = None,
    *,
    profiler: queryprof.Profiler | None = None,
    seed_authors: int = 20,
    on_engine: Callable[[AsyncEngine], object] | None = None,
) -> FastAPI:
    """Build the blog app.

    ``database_url`` defaults to ``$DATABASE_URL``, else an in-memory SQLite database.
    With a ``profiler``, the engine is instrumented, the middleware installed and, if the
    profiler has one, its metrics endpoint mounted on ``/metrics``. ``on_engine`` is
    called with the engine as soon as it exists, before any statement runs: the hook for
    other instrumentation (``benchmarks/bench_load.py`` puts OpenTelemetry's there).
    """
    url = resolve_database_url(database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(url)
        if profiler is not None:
            profiler.instrument(engine)
        if on_engine is not None:
            on_engine(engine)
        app.state.engine = engine
        app.state.session_factory = create_session_factory(engine)
        try:
            await create_schema(engine)
            await seed_if_empty(app.state.session_factory, authors=seed_authors)
            yield
        finally:
            await engine.dispose()

    app = FastAPI(title="queryprof blog example", lifespan=lifespan)
    app.include_router(authors)
    app.include_router(posts)
    app.include_router(reports)

    if profiler is not None:
        # Imported here so the app also runs where queryprof is not importable.
        from queryprof import QueryProfilerMiddleware

        app.add_middleware(QueryProfilerMiddleware, profiler=profiler)
        metrics_endpoint = getattr(profiler, "metrics_endpoint", None)
        if metrics_endpoint is not None:
            app.add_route("/metrics", metrics_endpoint)
    return app
