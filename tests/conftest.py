"""Shared fixtures: real database servers, read from the environment with local defaults.

A server that cannot be reached skips the tests that need it, with the reason, except under
``CI=true``, where that is a failure: CI must never go green by skipping the real databases.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from opentelemetry import trace
from opentelemetry._logs import _internal as logs_internal
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import create_engine

from queryprof import Profiler, Scope
from queryprof import scope as scope_module

pytest_plugins = ["pytester"]

PG_URL = os.environ.get("QUERYPROF_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
PG_SYNC_URL = os.environ.get(
    "QUERYPROF_PG_SYNC_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("QUERYPROF_MYSQL_URL", "mysql+aiomysql://root@127.0.0.1:3306/test")
MYSQL_SYNC_URL = os.environ.get(
    "QUERYPROF_MYSQL_SYNC_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)

_reachable: dict[str, str | None] = {}


def _unreachable_reason(url: str) -> str | None:
    parts = urlsplit(url.replace("+asyncpg", "").replace("+aiomysql", ""))
    address = (parts.hostname or "127.0.0.1", parts.port or 0)
    if address not in _reachable:
        try:
            socket.create_connection(address, timeout=2).close()
            _reachable[address] = None
        except OSError as exc:
            _reachable[address] = f"{url} is not reachable: {exc}"
    return _reachable[address]


def require_server(url: str) -> None:
    """Skip (or, under CI=true, fail) when the database server of ``url`` is down."""
    if url.startswith("sqlite"):
        return
    reason = _unreachable_reason(url)
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run against real PostgreSQL and MariaDB")
    pytest.skip(reason)


def profiler_factory(**defaults: Any) -> Iterator[Callable[..., Profiler]]:
    """For a ``profilers`` fixture: make profilers with these default settings (findings not
    logged unless asked); every one is uninstrumented at teardown."""
    made: list[Profiler] = []

    def make(**settings: Any) -> Profiler:
        profiler = Profiler(**{"log_findings": False, **defaults, **settings})
        made.append(profiler)
        return profiler

    yield make
    for profiler in made:
        profiler.uninstrument()


def recorder(profiler: Profiler) -> list[Scope]:
    """Every scope the profiler closes, in closing order (once per call of the callback)."""
    closed: list[Scope] = []
    profiler.on_scope_close(closed.append)
    return closed


@contextmanager
def postgres_table(name: str, columns: str, fill: str) -> Iterator[str]:
    """A PostgreSQL table for one test, made with ``columns`` and filled by the SELECT
    ``fill``; dropped afterwards."""
    require_server(PG_SYNC_URL)
    admin = create_engine(PG_SYNC_URL)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
            conn.exec_driver_sql(f"CREATE TABLE {name} ({columns})")
            conn.exec_driver_sql(f"INSERT INTO {name} {fill}")
        yield name
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        admin.dispose()


@pytest.fixture(autouse=True)
def _no_leftover_scopes(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts and ends outside any scope: a leaked scope would skew the next.

    The one exception is the test's own scope, opened by queryprof's pytest plugin before the
    fixtures when the test counts their statements too (``include_setup=True``); the plugin
    closes it before any fixture is torn down.
    """
    plugin = request.config.pluginmanager.get_plugin("queryprof")
    own = plugin.scope_of(request.node) if plugin is not None else None
    assert scope_module.current_scope() is None
    assert scope_module.process_scopes in ((), (own,))
    yield
    assert scope_module.process_scopes == ()


# --------------------------------------------------------------------------- OpenTelemetry


class Balance(SpanProcessor):
    """Counts spans started and ended: every test ends with none left open."""

    def __init__(self) -> None:
        self.open: dict[int, str] = {}

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.open[span.context.span_id] = span.name

    def on_end(self, span: ReadableSpan) -> None:
        assert span.context is not None
        self.open.pop(span.context.span_id, None)


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    logs: InMemoryLogRecordExporter
    tracer_provider: TracerProvider

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def server_span(self) -> ReadableSpan:
        servers = [s for s in self.finished() if s.kind is SpanKind.SERVER]
        assert len(servers) == 1, [s.name for s in servers]
        return servers[0]


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    """The SDK with in-memory exporters as the global tracer and logger providers."""
    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    balance = Balance()
    tracer_provider.add_span_processor(balance)
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    saved = trace._TRACER_PROVIDER, logs_internal._LOGGER_PROVIDER
    trace._TRACER_PROVIDER = tracer_provider
    logs_internal._LOGGER_PROVIDER = logger_provider
    try:
        yield Telemetry(spans, logs, tracer_provider)
        assert not balance.open, f"spans never ended: {sorted(balance.open.values())}"
    finally:
        trace._TRACER_PROVIDER, logs_internal._LOGGER_PROVIDER = saved
        tracer_provider.shutdown()
        logger_provider.shutdown()
