"""SQL route tags (``sql_route_tags=True``) against asyncpg's prepared-statement cache.

    .venv/bin/python benchmarks/bench_route_tags.py [--requests 3000] [--routes 10]
        [--url postgresql+asyncpg://postgres@127.0.0.1:5432/test]

Two copies of one FastAPI app on PostgreSQL through asyncpg, each with its own engine (a pool
of 4 connections) and Profiler, one with ``sql_route_tags=True``. Each of ``--routes`` routes
runs its own 3 statements, with new parameter values each request. Requests go to both apps
in turn, in random order each round, so machine noise hits both alike. Printed per app:

* server-side prepared statements per connection (``pg_prepared_statements``, read on each
  pooled connection at the end): a tag that changed per request would grow this with
  traffic, up to asyncpg's cache size, and re-prepare on every statement;
* the p50 and p99 of the per-statement time the profiler measured around the driver call.

Target: the same prepared statements per connection, and a p50 ratio (tags on / off) of
about 1.0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from queryprof import Profiler, QueryProfilerMiddleware, Scope

DEFAULT_URL = os.environ.get(
    "QUERYPROF_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
POOL_SIZE = 4
STATEMENTS = (
    "SELECT {r} AS route, CAST(:n AS int) + 1 AS next",
    "SELECT {r} AS route, count(*) FROM generate_series(1, CAST(:n AS int) % 50 + 1)",
    "SELECT {r} AS route, md5(CAST(CAST(:n AS int) AS text))",
)


def make_app(engine: AsyncEngine, profiler: Profiler, routes: int) -> FastAPI:
    app = FastAPI()

    def add(r: int) -> None:
        statements = [text(s.format(r=r)) for s in STATEMENTS]

        async def endpoint(n: int) -> dict[str, int]:
            async with engine.connect() as conn:
                for statement in statements:
                    await conn.execute(statement, {"n": n})
            return {"route": r}

        app.add_api_route(f"/r{r}/{{n}}", endpoint, methods=["GET"])

    for r in range(routes):
        add(r)
    app.add_middleware(QueryProfilerMiddleware, profiler=profiler)
    return app


async def prepared_per_connection(engine: AsyncEngine) -> list[int]:
    """Check out every pooled connection at once and count its prepared statements."""
    connections = [await engine.connect() for _ in range(POOL_SIZE)]
    try:
        query = text("SELECT count(*) FROM pg_prepared_statements")
        return [(await c.execute(query)).scalar_one() for c in connections]
    finally:
        for c in connections:
            await c.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(url: str, requests: int, routes: int) -> None:
    apps: dict[str, tuple[AsyncEngine, FastAPI]] = {}
    timings: dict[str, list[float]] = {"off": [], "on": []}
    profilers = []
    for mode in ("off", "on"):
        engine = create_async_engine(url, pool_size=POOL_SIZE, max_overflow=0)
        profiler = Profiler(sql_route_tags=mode == "on", log_findings=False, explain=False)
        profiler.instrument(engine)
        profilers.append(profiler)

        def collect(scope: Scope, into: list[float] = timings[mode]) -> None:
            into.extend(q.duration for q in scope.queries)

        profiler.on_scope_close(collect)
        apps[mode] = (engine, make_app(engine, profiler, routes))
    clients = {
        mode: httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bench")
        for mode, (_, app) in apps.items()
    }
    rng = random.Random(7)

    async def worker(count: int) -> None:
        for _ in range(count):
            path = f"/r{rng.randrange(routes)}/{rng.randrange(1_000_000)}"
            modes = ["off", "on"]
            rng.shuffle(modes)
            for mode in modes:
                response = await clients[mode].get(path)
                response.raise_for_status()

    concurrency = POOL_SIZE
    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    print(f"{requests} requests per app over {routes} routes x {len(STATEMENTS)} statements")
    print(f"{'sql_route_tags':<16}{'prepared/conn':>20}{'p50 us':>10}{'p99 us':>10}")
    p50 = {}
    for mode, (engine, _) in apps.items():
        prepared = await prepared_per_connection(engine)
        values = timings[mode]
        p50[mode] = statistics.median(values)
        print(
            f"{mode:<16}{prepared!s:>20}{p50[mode] * 1e6:>10.0f}"
            f"{percentile(values, 0.99) * 1e6:>10.0f}"
        )
    print(f"p50 ratio on/off: {p50['on'] / p50['off']:.3f}")
    for client in clients.values():
        await client.aclose()
    for profiler in profilers:
        profiler.uninstrument()
    for engine, _ in apps.values():
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--routes", type=int, default=10)
    parser.add_argument("--url", default=DEFAULT_URL)
    args = parser.parse_args()
    asyncio.run(run(args.url, args.requests, args.routes))


if __name__ == "__main__":
    main()
