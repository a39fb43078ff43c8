"""A soak test: thousands of requests and statement shapes, and nothing grows without bound.

Many routes, thousands of distinct statement shapes (more than the shape cache holds), every
statement a slow query (so the EXPLAIN window and queue are under pressure), concurrent
requests. At the end: every request's count exact, every cache at or under its cap, the
metrics' label sets bounded by the routes, and the process's resident memory grown by less
than a bound after the warm-up (which makes the allocator's arenas and the first half of
the caches). ``QUERYPROF_SOAK_REQUESTS`` sets the size (CI: the default).
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from queryprof import Profiler, QueryProfilerMiddleware, Scope, callsite, current_scope
from queryprof._guard import internal_error_count
from queryprof.explain import worker
from queryprof.fingerprint import SHAPE_CACHE_SIZE, shape_cache_stats

REQUESTS = int(os.environ.get("QUERYPROF_SOAK_REQUESTS", "4500"))
ROUTES = 40
CONCURRENCY = 16
RSS_GROWTH_LIMIT = 40 * 1024 * 1024  # bytes, after the warm-up


def _rss() -> int:
    gc.collect()  # count what is kept, not garbage waiting for a collection
    status = Path("/proc/self/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1)) * 1024


@pytest.mark.soak
async def test_soak_keeps_counts_exact_and_every_cache_at_its_cap(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'soak.db'}", pool_size=20)
    registry = CollectorRegistry()
    profiler = Profiler(
        registry=registry,
        log_findings=False,
        slow_query_threshold=1e-6,  # every statement is slow: the EXPLAIN caps get tested
        explain_queue_size=20,
    )
    profiler.instrument(engine)
    counts: dict[int, int] = {}
    # Keep only numbers: a list of scopes would itself grow the process.
    profiler.on_scope_close(
        lambda s: counts.__setitem__(s.attributes.get("rid", -1), s.query_count)
    )
    app = FastAPI()

    def route(k: int) -> None:
        @app.get(f"/r{k}/{{rid}}")
        async def endpoint(rid: int) -> dict[str, int]:
            scope: Scope | None = current_scope()
            assert scope is not None
            scope.attributes["rid"] = rid
            n = rid % 7 + 1
            async with engine.connect() as conn:
                for i in range(n):
                    # A distinct shape per request (the alias), so shapes outnumber the cache.
                    await conn.execute(text(f"SELECT CAST(:i AS INTEGER) AS c_{rid}"), {"i": i})
            return {"n": n}

    for k in range(ROUTES):
        route(k)
    app.add_route("/metrics", profiler.metrics_endpoint)
    app.add_middleware(QueryProfilerMiddleware, profiler=profiler)
    errors_before = internal_error_count()
    rss_after_warmup = 0

    async def worker_(http: httpx.AsyncClient, rids: range) -> None:
        for rid in rids:
            response = await http.get(f"/r{rid % ROUTES}/{rid}")
            assert response.json() == {"n": rid % 7 + 1}

    transport = httpx.ASGITransport(app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://soak") as http:
            warmup = REQUESTS // 2  # the caches fill up in the second half
            await asyncio.gather(
                *(worker_(http, range(w, warmup, CONCURRENCY)) for w in range(CONCURRENCY))
            )
            assert await profiler.flush(60)
            rss_after_warmup = _rss()
            await asyncio.gather(
                *(
                    worker_(http, range(warmup + w, REQUESTS, CONCURRENCY))
                    for w in range(CONCURRENCY)
                )
            )
            assert await profiler.flush(60)
            metrics = (await http.get("/metrics")).text
    finally:
        profiler.uninstrument()
        await engine.dispose()
    growth = _rss() - rss_after_warmup

    assert internal_error_count() == errors_before
    assert {rid: counts[rid] for rid in range(REQUESTS)} == {
        rid: rid % 7 + 1 for rid in range(REQUESTS)
    }
    # Caches at or under their caps.
    shapes = shape_cache_stats()
    assert shapes["size"] <= SHAPE_CACHE_SIZE
    if REQUESTS > SHAPE_CACHE_SIZE:
        assert shapes["size"] == SHAPE_CACHE_SIZE
        assert shapes["evicted"] > 0
    sites = callsite.cache_stats()
    assert sites["size"] <= sites["max_size"]
    assert len(callsite._hints) <= callsite._MAX_CACHED
    explainer = profiler.explainer
    assert explainer is not None
    stats = explainer.stats()
    assert len(explainer._plans) <= worker.MAX_SHAPES
    assert stats["queue_peak"] <= 20
    assert (stats["running"], stats["queued"]) == (0, 0)
    assert stats["dropped"] > 0  # the queue was full at times: the cap was reached
    # Metrics: one label set per route template, never per raw path.
    routes = set(re.findall(r'http_route="([^"]+)"', metrics))
    assert len(routes) == ROUTES
    assert all(re.fullmatch(r"/r\d+/\{rid\}", r) for r in routes)
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB after the warm-up"
