"""Helpers of the metrics tests: reading an exposition, serving an app in a thread, a sampled
OpenTelemetry span around each request, and finding the Prometheus binaries."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_CACHE = ROOT / ".cache" / "prometheus" / "usr" / "bin"

# The ids of the sampled span that SampledSpan puts around every request.
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value, 0 when the series does not exist (yet)."""
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def series(text: str, prefix: str = "queryprof_") -> set[tuple[str, frozenset[tuple[str, str]]]]:
    """Every (sample name, labels) of a text exposition whose name starts with ``prefix``."""
    return {
        (s.name, frozenset(s.labels.items()))
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(prefix)
    }


def label_values(text: str, label: str) -> set[str]:
    return {dict(labels)[label] for _, labels in series(text) if label in dict(labels)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def served(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread of its own (its own event loop); yield its URL.

    A thread, so that synchronous code (a Prometheus server, a traffic loop) can use it."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        for _ in range(1000):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.01)
        if not server.started:
            raise RuntimeError("uvicorn did not start")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


class SampledSpan:
    """ASGI middleware: runs each HTTP request inside a sampled OpenTelemetry span, as an
    instrumentation such as opentelemetry-instrumentation-asgi would (API only, no SDK)."""

    def __init__(self, app: Any, *, sampled: bool = True) -> None:
        self.app = app
        self.sampled = sampled

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from opentelemetry import trace

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if self.sampled else 0)
        context = trace.SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=flags)
        with trace.use_span(trace.NonRecordingSpan(context)):
            await self.app(scope, receive, send)


def prometheus_binaries() -> tuple[Path, Path]:
    """(prometheus, promtool): ``$QUERYPROF_PROMETHEUS``, the Makefile's cache, or PATH.

    Missing: skip, except under CI=true, where that fails (``make prometheus`` fetches them)."""
    candidates = []
    if os.environ.get("QUERYPROF_PROMETHEUS"):
        candidates.append(Path(os.environ["QUERYPROF_PROMETHEUS"]))
    candidates.append(PROMETHEUS_CACHE / "prometheus")
    on_path = shutil.which("prometheus")
    if on_path:
        candidates.append(Path(on_path))
    for prometheus in candidates:
        promtool = prometheus.with_name("promtool")
        if prometheus.is_file() and promtool.is_file():
            return prometheus, promtool
    reason = (
        "no Prometheus binaries (run `make prometheus`, or set QUERYPROF_PROMETHEUS to the "
        f"prometheus binary); looked at {', '.join(map(str, candidates))}"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason + "; CI must run the Prometheus tests")
    pytest.skip(reason)
