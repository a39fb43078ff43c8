"""With default settings, no parameter value and no SQL literal leaves queryprof.

One request sends known secrets down every path a value can take (a bound parameter, a WHERE
literal, a number, a slow statement that gets an EXPLAIN, an N+1, a duplicate, a failing
statement whose database error quotes the value) on PostgreSQL, and the test searches every
output: log records (message and every attribute), the ``/metrics`` exposition in both
formats, the response headers, the plans, the recorded statements and, when OpenTelemetry is
installed, every span, span attribute and span event.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import create_async_engine

from conftest import PG_URL, Telemetry, postgres_table
from queryprof import Profiler, QueryProfilerMiddleware, Scope

SECRET = "hunter2-s3cr3t-token"
LITERAL = "lit3ral-p4ssw0rd"
NUMBER = 987654321
TABLE = f"qpx_users_{os.getpid():x}"


@pytest.fixture
def users() -> Iterator[str]:
    fill = "SELECT g, 't' || g FROM generate_series(1, 99) g"
    with postgres_table(TABLE, "id INTEGER PRIMARY KEY, token TEXT", fill) as name:
        yield name


def _traced(app: Any) -> Any:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(app)


def _span_text(otel: Telemetry) -> str:
    parts = []
    for span in otel.finished():
        parts.append(span.name)
        parts.append(json.dumps(dict(span.attributes or {}), default=repr))
        for ev in span.events:
            parts.append(ev.name + json.dumps(dict(ev.attributes or {}), default=repr))
    return "\n".join(parts)


def _log_text(records: list[logging.LogRecord]) -> str:
    return "\n".join(r.getMessage() + json.dumps(r.__dict__, default=repr) for r in records)


async def test_a_secret_reaches_no_output(
    users: str, caplog: pytest.LogCaptureFixture, otel: Telemetry
) -> None:
    engine = create_async_engine(PG_URL, pool_size=3, max_overflow=0)
    registry = CollectorRegistry()
    # Only the thresholds differ from the defaults: every finding kind must have something.
    profiler = Profiler(registry=registry, slow_query_threshold=0.05)
    profiler.instrument(engine)
    closed: list[Scope] = []
    profiler.on_scope_close(closed.append)
    app = FastAPI()

    @app.get("/users")
    async def lookup() -> Any:
        async with engine.connect() as conn:
            for i in range(6):  # an N+1, a secret in every run's parameters
                await conn.execute(
                    text(f"SELECT id FROM {users} WHERE token = :t AND id > :i"),
                    {"t": SECRET, "i": NUMBER + i},
                )
            for _ in range(2):  # a duplicate
                await conn.execute(text(f"SELECT id FROM {users} WHERE token = :t"), {"t": SECRET})
            # A slow statement with literals in its WHERE clause: its plan is obtained too.
            await conn.execute(
                text(
                    f"SELECT id FROM {users}, pg_sleep(0.06) "
                    f"WHERE token = '{LITERAL}' OR id = {NUMBER}"
                )
            )
            try:  # PostgreSQL quotes the bad value in its error message
                await conn.execute(text("SELECT CAST(:v AS INTEGER)"), {"v": SECRET})
            except exc.DBAPIError:
                return JSONResponse({"failed": True}, status_code=400)
        return {"failed": False}

    app.add_route("/metrics", profiler.metrics_endpoint)
    app.add_middleware(QueryProfilerMiddleware, profiler=profiler)
    transport = httpx.ASGITransport(_traced(app))
    try:
        with caplog.at_level(logging.DEBUG):
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                response = await http.get("/users")
                assert await profiler.flush(30)
                metrics = (await http.get("/metrics")).text
                openmetrics = (
                    await http.get("/metrics", headers={"Accept": "application/openmetrics-text"})
                ).text
    finally:
        profiler.uninstrument()
        await engine.dispose()

    [scope] = [s for s in closed if s.name == "GET /users"]
    kinds = {f.kind for f in scope.findings}
    assert {"n_plus_one", "duplicate_query", "slow_query"} <= kinds  # every path was taken
    [slow] = [f for f in scope.findings if f.kind == "slow_query"]
    assert slow.plan is not None
    assert slow.plan.status == "ok", slow.plan.error
    assert response.status_code == 400
    assert "server-timing" not in response.headers  # off by default
    assert all(q.parameters is None for q in scope.queries)

    outputs = {
        "logs": _log_text(caplog.records),
        "metrics": metrics,
        "openmetrics": openmetrics,
        "headers": json.dumps(dict(response.headers)),
        "findings": json.dumps([f.as_dict() for f in scope.findings], default=repr),
        "plan": slow.plan.text + json.dumps(slow.plan.raw) + "".join(slow.plan.hints),
        "queries": json.dumps([q.__repr__() for q in scope.queries]),
        "spans": _span_text(otel),
    }
    # The outputs are not empty: the searches below look at real content.
    assert users in outputs["logs"]
    assert "queryprof_http_request_queries" in outputs["metrics"]
    assert "Seq Scan" in outputs["plan"] or "Index" in outputs["plan"]
    assert "queryprof.n_plus_one" in outputs["spans"]
    assert "queryprof.plan" in outputs["spans"]
    for where, output in outputs.items():
        for secret in (SECRET, LITERAL, str(NUMBER)):
            assert secret not in output, f"{secret!r} leaked into {where}"
