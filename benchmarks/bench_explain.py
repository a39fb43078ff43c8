"""Request latency of a slow endpoint with EXPLAIN plans on and off.

    .venv/bin/python benchmarks/bench_explain.py [--requests 2000] [--concurrency 8]
        [--shapes 10] [--window 1.0] [--url postgresql+asyncpg://postgres@127.0.0.1:5432/test]

Two copies of one FastAPI app, each with its own engine and Profiler: ``explain=True`` and
``explain=False``. Their endpoint filters a 50,000-row table on an unindexed column (a real
sequential scan, a slow query for a threshold of 1 ms), in one of ``--shapes`` statement
shapes. The explain window is short (``--window``), so EXPLAINs keep running on the same event
loop as the requests, through the whole run. In one run, each client task sends its requests
to both apps in turn (random order each round), so machine noise hits both alike; the p50 and
p99 latency of each app and the ratios are printed. Target: p50 ratio at most 1.05.
Defaults to PostgreSQL (``QUERYPROF_PG_URL``); ``--url sqlite+aiosqlite:///bench.db`` works too.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import statistics
import time
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from queryprof import Profiler, QueryProfilerMiddleware

ROWS = 50_000
TABLE = f"qpe_bench_orders_{os.getpid():x}"
DEFAULT_URL = os.environ.get(
    "QUERYPROF_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
_FILL = {
    "postgresql": (
        f"INSERT INTO {TABLE} SELECT g, mod(g, 1000), md5(g::text) "
        f"FROM generate_series(1, {ROWS}) g"
    ),
    "sqlite": (
        f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) "
        f"INSERT INTO {TABLE} SELECT i, i % 1000, hex(randomblob(16)) FROM n"
    ),
}


def sync_url(url: str) -> str:
    return url.replace("+asyncpg", "+psycopg").replace("+aiosqlite", "")


def build(url: str) -> None:
    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {TABLE}")
        conn.exec_driver_sql(
            f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, customer_id INTEGER, note TEXT)"
        )
        conn.exec_driver_sql(_FILL[engine.dialect.name])
        conn.exec_driver_sql(f"ANALYZE {TABLE}")
    engine.dispose()


def drop(url: str) -> None:
    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {TABLE}")
    engine.dispose()


def make_app(engine: AsyncEngine, profiler: Profiler) -> FastAPI:
    app = FastAPI()

    @app.get("/orders/{shape}/{customer}")
    async def orders(shape: int, customer: int) -> dict[str, int]:
        sql = f"SELECT id, note AS note_{shape} FROM {TABLE} WHERE customer_id = :c"
        async with engine.connect() as conn:
            rows = (await conn.execute(text(sql), {"c": customer})).all()
        return {"rows": len(rows)}

    app.add_middleware(QueryProfilerMiddleware, profiler=profiler)
    return app


async def run(args: argparse.Namespace) -> None:
    settings: dict[str, Any] = {"slow_query_threshold": 0.001, "explain_window": args.window}
    engines = {name: create_async_engine(args.url, pool_size=args.concurrency) for name in "ab"}
    profilers = {
        "on": Profiler(explain=True, **settings),
        "off": Profiler(explain=False, **settings),
    }
    apps = {}
    for (name, profiler), engine in zip(profilers.items(), engines.values(), strict=True):
        profiler.instrument(engine)
        apps[name] = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=make_app(engine, profiler)), base_url="http://b"
        )
    latencies: dict[str, list[float]] = {"on": [], "off": []}

    async def client(worker: int) -> None:
        rng = random.Random(worker)
        for _ in range(args.requests // args.concurrency):
            path = f"/orders/{rng.randrange(args.shapes)}/{rng.randrange(1000)}"
            for name in rng.sample(["on", "off"], 2):
                started = time.perf_counter()
                response = await apps[name].get(path)
                latencies[name].append(time.perf_counter() - started)
                assert response.status_code == 200

    await asyncio.gather(*(client(w) for w in range(args.concurrency // 2)))  # warm-up
    latencies = {"on": [], "off": []}
    explainer = profilers["on"].explainer
    assert explainer is not None
    await profilers["on"].flush(30)
    before = explainer.stats()
    started = time.perf_counter()
    await asyncio.gather(*(client(w) for w in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    await profilers["on"].flush(30)
    stats = {k: v - before[k] for k, v in explainer.stats().items()}

    print(
        f"{len(latencies['on'])} requests per app, {args.concurrency} concurrent clients, "
        f"{args.shapes} shapes, explain window {args.window:g} s, {args.url.split('://')[0]}, "
        f"{elapsed:.1f} s"
    )
    print(
        f"EXPLAINs run: {stats['explained']}, plans reused: {stats['reused']}, "
        f"dropped: {stats['dropped']}, failed: {stats['failed'] + stats['timed_out']}"
    )
    result = {}
    for name, samples in latencies.items():
        samples.sort()
        p50 = statistics.median(samples)
        p99 = samples[min(len(samples) - 1, round(0.99 * len(samples)))]
        result[name] = (p50, p99)
        print(f"explain {name:<3}  p50 {p50 * 1000:7.2f} ms   p99 {p99 * 1000:7.2f} ms")
    p50_ratio = result["on"][0] / result["off"][0]
    p99_ratio = result["on"][1] / result["off"][1]
    verdict = "ok" if p50_ratio <= 1.05 else "ABOVE TARGET"
    print(f"ratio on/off  p50 {p50_ratio:.3f} ({verdict}, target <= 1.05)   p99 {p99_ratio:.3f}")
    for client_ in apps.values():
        await client_.aclose()
    for profiler in profilers.values():
        profiler.uninstrument()
    for engine in engines.values():
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per app")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--shapes", type=int, default=10)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--url", default=DEFAULT_URL)
    args = parser.parse_args()
    logging.getLogger("queryprof").addHandler(logging.NullHandler())
    logging.getLogger("queryprof").propagate = False  # findings are logged, into nothing
    build(args.url)
    try:
        asyncio.run(run(args))
    finally:
        drop(args.url)


if __name__ == "__main__":
    main()
