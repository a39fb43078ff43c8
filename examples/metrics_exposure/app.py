"""Two ways to keep ``/metrics`` away from the public: a separate port, or a token.

The metrics hold route templates, timings and finding counts: no data, but a map of the
application and its load that nobody outside needs. Either serve them on a port only
Prometheus can reach, or ask for a token on the public port.

Separate port (the usual choice; bind it to an internal interface)::

    uvicorn examples.metrics_exposure.main:app --port 8000
    uvicorn examples.metrics_exposure.main:metrics_app --host 10.0.0.5 --port 9100

Token on the public port (Prometheus sends it with ``authorization: {credentials: ...}``)::

    QUERYPROF_METRICS_TOKEN=... uvicorn examples.metrics_exposure.main:token_app --port 8000

Both apps share one profiler and its registry, so the separate port sees the public app's
requests. With several worker processes, set ``PROMETHEUS_MULTIPROC_DIR`` (docs/metrics.md).
Importing this module has no side effects; ``main.py`` builds the apps named above.
"""

from __future__ import annotations

import secrets

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.routing import Route

from queryprof import Profiler, QueryProfilerMiddleware


def create_app(engine: AsyncEngine, profiler: Profiler) -> FastAPI:
    """The public application: profiled, and no ``/metrics`` route."""
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, int]:
        async with engine.connect() as conn:
            value = await conn.execute(text("SELECT CAST(:id AS INTEGER)"), {"id": item_id})
            return {"id": value.scalar_one()}

    app.add_middleware(QueryProfilerMiddleware, profiler=profiler)
    return app


def create_metrics_app(profiler: Profiler) -> Starlette:
    """Only ``/metrics``: serve it on a port that only Prometheus can reach."""
    return Starlette(routes=[Route("/metrics", profiler.metrics_endpoint)])


def create_token_app(engine: AsyncEngine, profiler: Profiler, token: str) -> FastAPI:
    """The public application with ``/metrics`` behind a bearer token."""
    app = create_app(engine, profiler)
    bearer = HTTPBearer(auto_error=False)

    def require_token(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> None:
        # compare_digest: the time taken does not tell how much of a guess was right.
        given = credentials.credentials if credentials is not None else ""
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "a valid bearer token is needed for /metrics")

    @app.get("/metrics", dependencies=[Depends(require_token)], include_in_schema=False)
    async def metrics(request: Request) -> Response:
        response: Response = await profiler.metrics_endpoint(request)
        return response

    return app
