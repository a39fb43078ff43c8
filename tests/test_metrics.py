"""Prometheus metrics: what closed scopes and pool events put in the registry, and the
``/metrics`` endpoint, through the real ASGI stack, real prometheus_client and real databases.

Each test gets a registry of its own (``registry=``) unless it tests the default one.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from examples.blog.app import create_app
from fastapi import Depends, FastAPI, Header, HTTPException
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from conftest import PG_SYNC_URL, PG_URL, profiler_factory, require_server
from metrics_apps import CARDINALITY_ROUTES, cardinality_app, exercise_pool, memory_engine
from metrics_support import (
    ROOT,
    SPAN_ID,
    TRACE_ID,
    SampledSpan,
    free_port,
    label_values,
    series,
    value,
)
from queryprof import Profiler, QueryProfilerMiddleware
from queryprof._guard import internal_error, internal_error_count

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def profilers(registry: CollectorRegistry) -> Iterator[Callable[..., Profiler]]:
    """Profilers on the test's registry."""
    yield from profiler_factory(registry=registry)


@asynccontextmanager
async def client_of(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app through ASGI, with its lifespan run around it.

    ASGITransport returns once the app call has finished, so the request's scope is closed
    and observed by the time a response is returned."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client,
    ):
        yield client


@asynccontextmanager
async def blog(profiler: Profiler, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(create_app(profiler=profiler, **options)) as client:
        yield client


def histogram(registry: CollectorRegistry, name: str, **labels: str) -> tuple[float, float]:
    """(count, sum) of one histogram series."""
    return value(registry, name + "_count", **labels), value(registry, name + "_sum", **labels)


# --------------------------------------------------------------------------- the metrics


async def test_every_contract_metric_is_exported_with_its_labels(
    profilers: Callable[..., Profiler], registry: CollectorRegistry
) -> None:
    profiler = profilers(slow_query_threshold=0.01, long_transaction_threshold=0.1)
    async with blog(profiler) as client:
        await client.get("/authors")
        await client.get("/reports/slow", params={"seconds": 0.05})
        await client.post("/posts/1/views", params={"hold": 0.15})

    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    expected = {
        "queryprof_http_request_queries": ("histogram", {"http_route", "http_request_method"}),
        "queryprof_http_request_db_duration_seconds": (
            "histogram",
            {"http_route", "http_request_method"},
        ),
        "queryprof_db_query_duration_seconds": ("histogram", {"db_operation_name", "http_route"}),
        "queryprof_findings": ("counter", {"kind", "http_route"}),
        "queryprof_db_transaction_duration_seconds": ("histogram", {"outcome", "http_route"}),
        "queryprof_db_pool_connections": ("gauge", {"pool", "state"}),
        "queryprof_internal_errors": ("counter", set()),
    }
    for name, (kind, labels) in expected.items():
        family = families[name]
        assert family.type == kind, name
        assert family.samples, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, sample
    operations = {
        s.labels["db_operation_name"]
        for s in families["queryprof_db_query_duration_seconds"].samples
    }
    assert operations == {"SELECT", "UPDATE"}
    states = {s.labels["state"] for s in families["queryprof_db_pool_connections"].samples}
    assert states == {"used", "idle"}


async def test_queries_and_db_time_per_request_by_route(
    profilers: Callable[..., Profiler], registry: CollectorRegistry
) -> None:
    profiler = profilers()
    async with blog(profiler) as client:
        await client.get("/authors")  # 21 statements
        await client.get("/authors/eager")  # 2
        await client.get("/authors/3")  # 1
        await client.get("/authors/4")  # 1

    name = "queryprof_http_request_queries"
    get = {"http_request_method": "GET"}
    assert histogram(registry, name, http_route="/authors", **get) == (1, 21)
    assert histogram(registry, name, http_route="/authors/eager", **get) == (1, 2)
    assert histogram(registry, name, http_route="/authors/{author_id}", **get) == (2, 2)
    bucket = name + "_bucket"
    assert value(registry, bucket, http_route="/authors", le="20.0", **get) == 0
    assert value(registry, bucket, http_route="/authors", le="50.0", **get) == 1
    count, seconds = histogram(
        registry, "queryprof_http_request_db_duration_seconds", http_route="/authors", **get
    )
    assert count == 1
    assert 0 < seconds < 5
    count, total = histogram(
        registry, "queryprof_http_request_duration_seconds", http_route="/authors", **get
    )
    assert count == 1
    assert total >= seconds


async def test_statement_durations_by_operation(
    profilers: Callable[..., Profiler], registry: CollectorRegistry
) -> None:
    profiler = profilers()
    async with blog(profiler) as client:
        response = await client.post("/authors/2/bulk-comments", params={"count": 3})
        assert response.status_code == 201

    route = "/authors/{author_id}/bulk-comments"
    name = "queryprof_db_query_duration_seconds_count"
    assert value(registry, name, db_operation_name="INSERT", http_route=route) == 3
    assert value(registry, name, db_operation_name="SELECT", http_route=route) == 2
    assert value(registry, name, db_operation_name="UPDATE", http_route=route) == 0


async def test_findings_are_counted_by_kind_and_route(
    profilers: Callable[..., Profiler], registry: CollectorRegistry
) -> None:
    profiler = profilers(slow_query_threshold=0.01, long_transaction_threshold=0.1)
    async with blog(profiler) as client:
        await client.get("/authors")
        await client.get("/authors")
        await client.get("/posts/1/duplicate")
        await client.post("/authors/1/bulk-comments", params={"count": 6})
        await client.get("/reports/slow", params={"seconds": 0.05})
        await client.post("/posts/1/views", params={"hold": 0.15})
        await client.get("/authors/eager")

    def findings(kind: str, route: str) -> float:
        return value(registry, "queryprof_findings_total", kind=kind, http_route=route)

    assert findings("n_plus_one", "/authors") == 2
    assert findings("duplicate_query", "/posts/{post_id}/duplicate") == 1
    assert findings("repeated_write", "/authors/{author_id}/bulk-comments") == 1
    assert findings("slow_query", "/reports/slow") == 1
    assert findings("long_transaction", "/posts/{post_id}/views") == 1
    assert label_values(generate_latest(registry).decode(), "kind") == {
        "n_plus_one",
        "duplicate_query",
        "repeated_write",
        "slow_query",
        "long_transaction",
    }
    assert findings("n_plus_one", "/authors/eager") == 0


async def test_transactions_by_outcome(
    profilers: Callable[..., Profiler], registry: CollectorRegistry
) -> None:
    profiler = profilers()
    async with blog(profiler) as client:
        await client.post("/posts/2/views", params={"hold": 0.2})  # commits
        await client.get("/authors/1")  # read-only: the pool rolls it back

    name = "queryprof_db_transaction_duration_seconds"
    count, seconds = histogram(
        registry, name, outcome="commit", http_route="/posts/{post_id}/views"
    )
    assert count == 1
    assert seconds >= 0.2
    count, _ = histogram(registry, name, outcome="rollback", http_route="/authors/{author_id}")
    assert count == 1


@pytest.mark.parametrize(("slow", "long"), [(None, None), (0.037, 0.3)])
async def test_thresholds_are_bucket_edges(
    profilers: Callable[..., Profiler],
    registry: CollectorRegistry,
    slow: float | None,
    long: float | None,
) -> None:
    settings = (
        {} if slow is None else {"slow_query_threshold": slow, "long_transaction_threshold": long}
    )
    profiler = profilers(**settings)
    slow = profiler.settings.slow_query_threshold
    long = profiler.settings.long_transaction_threshold
    async with blog(profiler) as client:
        await client.get("/reports/slow", params={"seconds": slow * 2.5})

    query = "queryprof_db_query_duration_seconds"
    labels = {"db_operation_name": "SELECT", "http_route": "/reports/slow"}
    at_most = registry.get_sample_value(query + "_bucket", {**labels, "le": str(slow)})
    assert at_most is not None, f"no bucket edge at {slow}"
    # The statements over the edge are the slow queries.
    over = value(registry, query + "_count", **labels) - at_most
    assert over == value(
        registry, "queryprof_findings_total", kind="slow_query", http_route="/reports/slow"
    )
    assert over == 1
    txn = "queryprof_db_transaction_duration_seconds_bucket"
    assert (
        registry.get_sample_value(
            txn, {"outcome": "rollback", "http_route": "/reports/slow", "le": str(long)}
        )
        is not None
    )


# --------------------------------------------------------------------------- registries


def test_profilers_on_one_registry_share_one_set_of_metrics(registry: CollectorRegistry) -> None:
    first = Profiler(registry=registry)
    second = Profiler(registry=registry, log_findings=False)
    assert first._metrics.metrics is second._metrics.metrics
    other = Profiler(registry=CollectorRegistry())
    assert other._metrics.metrics is not first._metrics.metrics


async def test_many_apps_on_the_default_registry_never_duplicate_timeseries() -> None:
    before = value(
        REGISTRY, "queryprof_http_request_queries_count",
        http_route="/authors/{author_id}", http_request_method="GET",
    )  # fmt: skip
    for _ in range(3):
        profiler = Profiler(log_findings=False)  # the global registry
        try:
            async with blog(profiler) as client:
                assert (await client.get("/authors/1")).status_code == 200
                assert (await client.get("/metrics")).status_code == 200
        finally:
            profiler.uninstrument()
    after = value(
        REGISTRY, "queryprof_http_request_queries_count",
        http_route="/authors/{author_id}", http_request_method="GET",
    )  # fmt: skip
    assert after - before == 3


def test_a_threshold_off_the_shared_buckets_is_reported(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    Profiler(registry=registry, slow_query_threshold=0.25)
    with caplog.at_level("WARNING", logger="queryprof"):
        Profiler(registry=registry, slow_query_threshold=0.123)
    assert any("slow_query_threshold=0.123" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bad", ["default", object(), True])
def test_a_registry_that_is_not_a_registry_fails_at_construction(bad: Any) -> None:
    with pytest.raises(TypeError, match="registry must be a prometheus_client CollectorRegistry"):
        Profiler(registry=bad)


# --------------------------------------------------------------------------- the endpoint


def starlette_app(profiler: Profiler, path: str) -> Starlette:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = Starlette(
        routes=[Route("/hello", hello)],
        middleware=[Middleware(QueryProfilerMiddleware, profiler=profiler)],
    )
    app.add_route(path, profiler.metrics_endpoint)
    return app


def fastapi_app(profiler: Profiler, path: str) -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> str:
        return "hello"

    app.add_middleware(QueryProfilerMiddleware, profiler=profiler)
    app.add_route(path, profiler.metrics_endpoint)
    return app


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app])
@pytest.mark.parametrize("path", ["/metrics", "/internal/metrics"])
async def test_the_endpoint_serves_the_exposition_at_exactly_its_path(
    profilers: Callable[..., Profiler],
    make_app: Callable[[Profiler, str], Any],
    path: str,
) -> None:
    profiler = profilers()
    async with client_of(make_app(profiler, path)) as client:
        await client.get("/hello")
        response = await client.get(path)  # httpx does not follow redirects: a 307 fails
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        names = {name for name, _ in series(response.text)}
        assert "queryprof_http_request_queries_count" in names
        assert ("GET", "/hello") in {
            (dict(labels).get("http_request_method"), dict(labels).get("http_route"))
            for _, labels in series(response.text)
        }

        openmetrics = await client.get(path, headers={"Accept": OPENMETRICS})
        assert openmetrics.status_code == 200
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.endswith("# EOF\n")
        assert "# TYPE queryprof_findings counter" in openmetrics.text


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app])
async def test_the_metrics_request_itself_is_not_profiled(
    profilers: Callable[..., Profiler], make_app: Callable[[Profiler, str], Any]
) -> None:
    profiler = profilers()
    closed: list[str] = []
    profiler.on_scope_close(lambda scope: closed.append(scope.name))
    async with client_of(make_app(profiler, "/metrics")) as client:
        for _ in range(3):
            assert (await client.get("/metrics")).status_code == 200
        await client.get("/hello")
        exposition = (await client.get("/metrics")).text

    assert len(closed) == 5  # the middleware saw every request ...
    assert label_values(exposition, "http_route") == {"/hello"}  # ... the metrics one only
    assert value_of(exposition, "queryprof_http_request_queries_count") == 1


def value_of(exposition: str, name: str) -> float:
    """The sum of a sample's values over its series, in an exposition."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name
    )


async def test_the_endpoint_behind_an_auth_dependency(profilers: Callable[..., Profiler]) -> None:
    """docs/metrics.md: wrapped in a FastAPI route of one's own, with a dependency."""
    profiler = profilers()
    app = fastapi_app(profiler, "/public-metrics")

    def require_token(authorization: Annotated[str, Header()] = "") -> None:
        if authorization != "Bearer s3cret":
            raise HTTPException(401, "no")

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_token)])
    async def metrics(request: Request) -> Any:
        return await profiler.metrics_endpoint(request)

    async with client_of(app) as client:
        await client.get("/hello")
        assert (await client.get("/metrics")).status_code == 401
        response = await client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert response.status_code == 200
        again = await client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    # The authorized scrape is not counted; the refused one is an ordinary request.
    assert label_values(again.text, "http_route") == {"/hello", "/metrics"}
    assert value_of(again.text, "queryprof_http_request_queries_count") == 2


async def test_a_failing_collector_makes_a_500_and_an_internal_error(
    profilers: Callable[..., Profiler], registry: CollectorRegistry
) -> None:
    class Broken:
        def collect(self) -> Any:
            raise RuntimeError("a collector of the application is broken")

    registry.register(Broken())  # type: ignore[arg-type]
    profiler = profilers()
    before = internal_error_count()
    async with client_of(fastapi_app(profiler, "/metrics")) as client:
        response = await client.get("/metrics")
        assert response.status_code == 500
        assert (await client.get("/hello")).status_code == 200
    assert internal_error_count() == before + 1


def test_a_registry_let_go_of_is_released() -> None:
    registry = CollectorRegistry()
    released = weakref.ref(registry)
    Profiler(registry=registry)
    del registry
    gc.collect()
    assert released() is None


def test_internal_errors_total_follows_the_guard(registry: CollectorRegistry) -> None:
    Profiler(registry=registry)
    before = value(registry, "queryprof_internal_errors_total")
    assert before == internal_error_count()
    internal_error("metrics test", ValueError("counted, not raised"))
    assert value(registry, "queryprof_internal_errors_total") == before + 1


# --------------------------------------------------------------------------- labels


async def test_ten_thousand_distinct_urls_do_not_grow_the_series(
    profilers: Callable[..., Profiler], registry: CollectorRegistry
) -> None:
    profiler = profilers()
    engine = memory_engine()
    profiler.instrument(engine)

    def urls(i: int) -> list[tuple[str, str]]:
        return [
            ("GET", f"/items/{i}"),  # a path parameter (and a 404 from the endpoint)
            ("GET", f"/items/{i}?q={i}"),
            ("GET", f"/users/{i}/orders/{i * 7}"),
            ("GET", f"/no/such/page/{i}"),  # unmatched
            ("GET", "/things/" + "x" * (i % 3)),  # unmatched (or a trailing-slash redirect)
            ("POST", f"/items/{i}"),  # 405
            ("BREW", f"/items/{i}"),  # a method that is no HTTP method
        ]

    async def send(start: int, stop: int) -> None:
        for i in range(start, stop):
            for method, url in urls(i):
                await client.request(method, url)

    try:
        async with client_of(cardinality_app(profiler, engine)) as client:
            await send(0, 20)
            first = series(generate_latest(registry).decode())
            await send(20, 10_000 // len(urls(0)) + 20)
            last = series(generate_latest(registry).decode())
    finally:
        await engine.dispose()

    assert last == first
    assert label_values(generate_latest(registry).decode(), "http_route") <= CARDINALITY_ROUTES
    assert {"GET", "POST", "_OTHER"} == label_values(
        generate_latest(registry).decode(), "http_request_method"
    )
    assert value(
        registry, "queryprof_http_request_queries_count",
        http_route="/items/{item_id}", http_request_method="GET",
    ) == 2 * (10_000 // len(urls(0)) + 20)  # fmt: skip


def test_a_scope_that_is_no_request_has_an_empty_route(
    profilers: Callable[..., Profiler], registry: CollectorRegistry, tmp_path: Path
) -> None:
    profiler = profilers()
    engine = create_engine(f"sqlite:///{tmp_path / 'qpm.db'}")
    profiler.instrument(engine)

    def run(n: int) -> None:
        with engine.connect() as conn:
            for i in range(n):
                conn.execute(text("SELECT :i"), {"i": i})

    with profiler.scope("nightly-import"):
        run(3)
    with profiler.scope("outer job"), profiler.scope("inner step"):
        run(2)  # counted once, by the outer scope
    with profiler.scope("a test", process_wide=True):
        run(4)  # the pytest plugin's kind of scope: not exported
    engine.dispose()

    name = "queryprof_db_query_duration_seconds_count"
    assert value(registry, name, db_operation_name="SELECT", http_route="") == 5
    exposition = generate_latest(registry).decode()
    assert label_values(exposition, "http_route") == {""}
    assert not any(n.startswith("queryprof_http_request") for n, _ in series(exposition))


# --------------------------------------------------------------------------- pools


def pool_state(registry: CollectorRegistry, pool: str) -> tuple[float, float]:
    """(used, idle)"""
    name = "queryprof_db_pool_connections"
    return value(registry, name, pool=pool, state="used"), value(
        registry, name, pool=pool, state="idle"
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_pool_gauges_follow_checkouts_checkins_and_closes(
    profilers: Callable[..., Profiler], registry: CollectorRegistry, tmp_path: Path, backend: str
) -> None:
    if backend == "postgresql":
        require_server(PG_SYNC_URL)
        url = PG_SYNC_URL
    else:
        url = f"sqlite:///{tmp_path / 'qpm_pool.db'}"
    engine = create_engine(url, pool_size=2, max_overflow=1, pool_logging_name="qpm-primary")
    profiler = profilers()
    profiler.instrument(engine)
    # A second profiler on the same registry, listening through the Engine class: every
    # event reaches the metrics twice and must still count once.
    profilers().instrument()

    def state() -> tuple[float, float, float]:
        capacity = value(registry, "queryprof_db_pool_max_connections", pool="qpm-primary")
        return (*pool_state(registry, "qpm-primary"), capacity)

    try:
        exercise_pool(engine, state)
    finally:
        engine.dispose()


def test_pool_gauges_in_multiprocess_mode(tmp_path: Path) -> None:
    """The same steps with PROMETHEUS_MULTIPROC_DIR set: every event writes the files."""
    script = textwrap.dedent(
        f"""
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector
        from sqlalchemy import create_engine
        from metrics_apps import exercise_pool
        from queryprof import Profiler

        engine = create_engine(
            "sqlite:///{tmp_path / "qpm_mp.db"}",
            pool_size=2, max_overflow=1, pool_logging_name="qpm-primary",
        )
        Profiler().instrument(engine)
        Profiler(log_findings=False).instrument()  # the Engine class: every event twice

        def state():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            def get(name, **labels):
                return registry.get_sample_value(name, {{"pool": "qpm-primary", **labels}}) or 0
            return (
                get("queryprof_db_pool_connections", state="used"),
                get("queryprof_db_pool_connections", state="idle"),
                get("queryprof_db_pool_max_connections"),
            )

        exercise_pool(engine, state)
        print("ok")
        """
    )
    multiproc_dir = tmp_path / "multiproc"
    multiproc_dir.mkdir()
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_a_connection_opened_before_instrument_counts_from_its_return(
    profilers: Callable[..., Profiler], registry: CollectorRegistry, tmp_path: Path
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'qpm_early.db'}", pool_logging_name="qpm-early")
    conn = engine.connect()
    profilers().instrument(engine)
    assert pool_state(registry, "qpm-early") == (0, 0)  # not seen yet
    conn.close()
    assert pool_state(registry, "qpm-early") == (0, 1)
    with engine.connect():
        assert pool_state(registry, "qpm-early") == (1, 0)
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_pool_gauges_of_an_async_engine(
    profilers: Callable[..., Profiler], registry: CollectorRegistry, tmp_path: Path, backend: str
) -> None:
    if backend == "postgresql":
        require_server(PG_URL)
        url, pool = PG_URL, "postgresql"
    else:
        url, pool = f"sqlite+aiosqlite:///{tmp_path / 'qpm_async.db'}", "sqlite"
    engine = create_async_engine(url, pool_size=3, max_overflow=0)
    profilers().instrument(engine)
    try:
        async with engine.connect() as first, engine.connect() as second:
            await first.execute(text("SELECT 1"))
            await second.execute(text("SELECT 1"))
            assert pool_state(registry, pool) == (2, 0)
        assert pool_state(registry, pool) == (0, 2)
        assert value(registry, "queryprof_db_pool_max_connections", pool=pool) == 3
    finally:
        await engine.dispose()
    assert pool_state(registry, pool) == (0, 0)


def test_uninstrument_removes_the_pool_listeners(
    profilers: Callable[..., Profiler], registry: CollectorRegistry, tmp_path: Path
) -> None:
    profiler = profilers()
    profiler.instrument()  # every engine
    first = create_engine(f"sqlite:///{tmp_path / 'qpm_un.db'}", pool_logging_name="qpm-one")
    with first.connect():
        assert pool_state(registry, "qpm-one") == (1, 0)
    profiler.uninstrument()
    second = create_engine(f"sqlite:///{tmp_path / 'qpm_un.db'}", pool_logging_name="qpm-two")
    with second.connect():
        assert pool_state(registry, "qpm-two") == (0, 0)
    assert not any(
        event.contains(Engine, name, fn) for name, fn in profiler._metrics.metrics.pools._listeners
    )
    first.dispose()
    second.dispose()


# --------------------------------------------------------------------------- exemplars


def exemplar_lines(exposition: str) -> list[str]:
    return [line for line in exposition.splitlines() if " # {" in line]


async def test_observations_carry_the_sampled_span_as_exemplar(
    profilers: Callable[..., Profiler],
) -> None:
    profiler = profilers()
    app = SampledSpan(create_app(profiler=profiler))
    async with (
        create_app_lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client,
    ):
        await client.get("/authors")
        openmetrics = (await client.get("/metrics", headers={"Accept": OPENMETRICS})).text
        plain = (await client.get("/metrics")).text

    ids = f'span_id="{SPAN_ID:016x}",trace_id="{TRACE_ID:032x}"'
    lines = exemplar_lines(openmetrics)
    assert any(line.startswith("queryprof_findings_total{") and ids in line for line in lines)
    for metric in ("queryprof_http_request_queries", "queryprof_db_query_duration_seconds"):
        assert any(line.startswith(metric + "_bucket{") and ids in line for line in lines), metric
    assert not exemplar_lines(plain)  # the text format has no exemplars


@pytest.mark.parametrize("setting", ["unsampled", "opentelemetry=False"])
async def test_no_exemplar_without_a_sampled_span_or_when_turned_off(
    profilers: Callable[..., Profiler], setting: str
) -> None:
    if setting == "unsampled":
        profiler = profilers()
        app = SampledSpan(create_app(profiler=profiler), sampled=False)
    else:
        profiler = profilers(opentelemetry=False)
        app = SampledSpan(create_app(profiler=profiler))
    async with (
        create_app_lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client,
    ):
        await client.get("/authors")
        openmetrics = (await client.get("/metrics", headers={"Accept": OPENMETRICS})).text
    assert "queryprof_findings_total{" in openmetrics
    assert not exemplar_lines(openmetrics)


def create_app_lifespan(app: SampledSpan) -> Any:
    return app.app.router.lifespan_context(app.app)


def test_metrics_work_where_opentelemetry_is_not_installed() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # import opentelemetry now raises ImportError
        from prometheus_client import CollectorRegistry, generate_latest
        from sqlalchemy import Engine, create_engine, event, text
        from queryprof import Profiler

        registry = CollectorRegistry()
        profiler = Profiler(registry=registry, opentelemetry="auto")
        engine = create_engine("sqlite://")
        profiler.instrument(engine)
        with profiler.scope("job"), engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        print(registry.get_sample_value(
            "queryprof_db_query_duration_seconds_count",
            {"db_operation_name": "SELECT", "http_route": ""},
        ))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1.0"


# --------------------------------------------------------------------------- multiprocess


def test_one_scrape_sums_every_uvicorn_worker(tmp_path: Path) -> None:
    multiproc_dir = tmp_path / "prometheus-multiproc"
    multiproc_dir.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
    }
    command = [
        sys.executable, "-m", "uvicorn", "metrics_apps:multiprocess_app", "--factory",
        "--workers", "2", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    server = subprocess.Popen(command, env=env, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        # A new connection per request, so the kernel hands requests to both workers.
        with httpx.Client(base_url=base, timeout=10, headers={"Connection": "close"}) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.get("/queries/0").raise_for_status()
                    break
                except httpx.TransportError:
                    assert server.poll() is None, "uvicorn exited; see its log above"
                    assert time.monotonic() < deadline, "uvicorn workers did not start"
                    time.sleep(0.1)
            pids: dict[int, int] = {}
            requests, statements = 1, 0  # the probe above ran no statement
            while len(pids) < 2 or requests < 40:
                assert requests < 2000, f"requests reached only the workers {pids}"
                n = requests % 4
                pid = client.get(f"/queries/{n}").json()["pid"]
                pids[pid] = pids.get(pid, 0) + 1
                requests += 1
                statements += n
            # A request's scope closes (and its metrics are written) just after its response
            # is sent, so the last request may still be closing in the other worker.
            route = frozenset({("http_route", "/queries/{n}"), ("http_request_method", "GET")})
            deadline = time.monotonic() + 10
            while True:
                samples = {
                    (sample.name, frozenset(sample.labels.items())): sample.value
                    for family in text_string_to_metric_families(client.get("/metrics").text)
                    for sample in family.samples
                }
                count = samples.get(("queryprof_http_request_queries_count", route))
                if count == requests or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
    finally:
        server.terminate()  # uvicorn's supervisor stops its workers
        server.wait(20)

    assert samples[("queryprof_http_request_queries_count", route)] == requests
    assert samples[("queryprof_http_request_queries_sum", route)] == statements
    # Each worker holds one idle connection (StaticPool): livesum adds the workers up.
    idle = frozenset({("pool", "sqlite"), ("state", "idle")})
    assert samples[("queryprof_db_pool_connections", idle)] == 2
    assert ("queryprof_internal_errors_total", frozenset()) in samples
