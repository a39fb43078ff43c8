"""examples/metrics_exposure: /metrics on a separate port, or behind a token, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from examples.metrics_exposure.app import create_app, create_metrics_app, create_token_app
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from apps import serve
from queryprof import Profiler

TOKEN = "s3cret-metrics-token"


@pytest.fixture
async def setup() -> AsyncIterator[tuple[AsyncEngine, Profiler]]:
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    profiler = Profiler(registry=CollectorRegistry(), log_findings=False)
    profiler.instrument(engine)
    yield engine, profiler
    profiler.uninstrument()
    await engine.dispose()


async def _get(url: str, path: str, **headers: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as http:
        return await http.get(path, headers=headers)


async def test_metrics_on_a_separate_port_only(setup: tuple[AsyncEngine, Profiler]) -> None:
    engine, profiler = setup
    async with (
        serve(create_app(engine, profiler)) as public,
        serve(create_metrics_app(profiler)) as internal,
    ):
        item = await _get(public, "/items/7")
        on_public = await _get(public, "/metrics")
        on_internal = await _get(internal, "/metrics")

    assert item.json() == {"id": 7}
    assert "server-timing" not in item.headers  # off by default
    assert on_public.status_code == 404
    assert on_internal.status_code == 200
    assert 'queryprof_http_request_queries_count{http_request_method="GET",' in on_internal.text
    assert 'http_route="/items/{item_id}"' in on_internal.text


async def test_metrics_behind_a_bearer_token(setup: tuple[AsyncEngine, Profiler]) -> None:
    engine, profiler = setup
    async with serve(create_token_app(engine, profiler, TOKEN)) as url:
        await _get(url, "/items/3")
        anonymous = await _get(url, "/metrics")
        wrong = await _get(url, "/metrics", authorization="Bearer not-the-token")
        allowed = await _get(url, "/metrics", authorization=f"Bearer {TOKEN}")

    assert (anonymous.status_code, wrong.status_code) == (401, 401)
    assert "queryprof_" not in anonymous.text + wrong.text
    assert allowed.status_code == 200
    assert 'http_route="/items/{item_id}"' in allowed.text
