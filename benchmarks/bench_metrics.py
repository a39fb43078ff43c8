"""Added cost of the Prometheus metrics per request: the same app, profiled with and without.

    .venv/bin/python benchmarks/bench_metrics.py [--rounds 21] [--requests 500] [--no-exemplars]

A Starlette app whose endpoint runs N statements (SQLite in memory, sync driver, so no thread
hop blurs the CPU time) behind ``QueryProfilerMiddleware``, called straight through ASGI (no
HTTP client, no server: they would only add noise). Two profilers with the same settings:
one as users get it, with metrics, the other with its metrics exporter taken out (no scope
callback, no pool listeners). All in CPU time of this process, in one run:

1. Per request: each round times both apps back to back (in alternating order) for a few
   small N; the median of the rounds' differences is what the metrics add per request.
2. Per statement: the metrics add nothing to a statement's own path (no listener runs per
   statement); their per-statement work is the loop over the records when the request
   ends. Timed around that callback inside the running app, for N from 0 to 100, the
   slope is the cost per statement. (The app-level difference at large N drowns in the
   statements' own noise on a shared machine.)

Target: under 10 us per request plus 2 us per statement.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text
from sqlalchemy.pool import StaticPool
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from queryprof import Profiler, QueryProfilerMiddleware

REQUEST_STATEMENTS = (0, 1, 3)  # part 1
SLOPE_STATEMENTS = (0, 10, 30, 100)  # part 2


class NoMetrics:
    """Stands in for a profiler's metrics exporter: does nothing."""

    def listen_pool(self, target: Any) -> None:
        pass

    def unlisten_pool(self, target: Any) -> None:
        pass


def without_metrics(profiler: Profiler) -> Profiler:
    profiler._on_close.remove(profiler._metrics.observe)
    profiler._metrics = NoMetrics()  # type: ignore[assignment]
    return profiler


def make_app(profiler: Profiler, engine: Any) -> Starlette:
    async def items(request: Request) -> PlainTextResponse:
        n = int(request.path_params["n"])
        with engine.connect() as conn:
            for i in range(n):
                conn.execute(text("SELECT :i"), {"i": i})
        return PlainTextResponse("ok")

    return Starlette(
        routes=[Route("/items/{n}", items)],
        middleware=[Middleware(QueryProfilerMiddleware, profiler=profiler)],
    )


async def call(app: Any, path: str) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    await app(scope, receive, send)


def per_request(app: Any, n: int, requests: int) -> float:
    path = f"/items/{n}"

    async def run() -> None:
        for _ in range(requests):
            await call(app, path)

    loop = asyncio.new_event_loop()
    gc.collect()
    gc.disable()  # a collection landing in one configuration's run is noise
    try:
        # CPU time of this process: other processes on a shared machine inflate wall time only.
        start = time.process_time()
        loop.run_until_complete(run())
        return (time.process_time() - start) / requests
    finally:
        gc.enable()
        loop.close()


def added_per_request(
    profilers: dict[str, Profiler], apps: dict[str, Any], engine: Any, rounds: int, requests: int
) -> float:
    results: dict[tuple[str, int], list[float]] = {
        (name, n): [] for name in profilers for n in REQUEST_STATEMENTS
    }
    for round_ in range(rounds):
        order = list(profilers.items())
        if round_ % 2:
            order.reverse()  # neither configuration always runs first
        for n in REQUEST_STATEMENTS:
            for name, profiler in order:
                profiler.instrument(engine)
                results[name, n].append(per_request(apps[name], n, requests))
                profiler.uninstrument()
    print(f"1. per request: {rounds} rounds x {requests} requests, CPU time, medians")
    print(f"{'statements':>10} {'without us':>11} {'with us':>9} {'added us':>9}   quartiles")
    everything = []
    for n in REQUEST_STATEMENTS:
        bare, full = results["without", n], results["with metrics", n]
        # The rounds' differences: each round's pair ran back to back.
        differences = [(f - b) * 1e6 for f, b in zip(full, bare, strict=True)]
        everything += differences
        low, _, high = statistics.quantiles(differences, n=4)
        print(
            f"{n:>10} {statistics.median(bare) * 1e6:11.1f} {statistics.median(full) * 1e6:9.1f} "
            f"{statistics.median(differences):9.2f}   [{low:.1f} .. {high:.1f}]"
        )
    return statistics.median(everything)


def callback_per_statement(profiler: Profiler, app: Any, engine: Any, requests: int) -> float:
    observe = profiler._metrics.observe
    spent = [0]

    def timed(scope: Any) -> None:
        start = time.thread_time_ns()
        observe(scope)
        spent[0] += time.thread_time_ns() - start

    index = profiler._on_close.index(observe)
    profiler._on_close[index] = timed
    profiler.instrument(engine)
    per_n = {}
    for n in SLOPE_STATEMENTS:
        samples = []
        for _ in range(5):
            spent[0] = 0
            per_request(app, n, requests // 5)
            samples.append(spent[0] / (requests // 5) / 1000)
        per_n[n] = statistics.median(samples)
    profiler.uninstrument()
    profiler._on_close[index] = observe
    print("2. the metrics callback when a request ends, CPU time, medians")
    for n, us in per_n.items():
        print(f"{n:>10} statements: {us:7.2f} us")
    mean_n = statistics.mean(per_n)
    mean_us = statistics.mean(per_n.values())
    return sum((n - mean_n) * (us - mean_us) for n, us in per_n.items()) / sum(
        (n - mean_n) ** 2 for n in per_n
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument(
        "--no-exemplars",
        action="store_true",
        help="Profiler(opentelemetry=False): no span lookup when a request ends",
    )
    args = parser.parse_args()

    engine = create_engine("sqlite://", poolclass=StaticPool)
    settings: dict[str, Any] = {
        "log_findings": False,
        "n_plus_one_threshold": 10**9,
        "duplicate_threshold": 10**9,
        "explain": False,
        "opentelemetry": False if args.no_exemplars else "auto",
    }
    profilers = {
        "with metrics": Profiler(registry=CollectorRegistry(), **settings),
        "without": without_metrics(Profiler(registry=CollectorRegistry(), **settings)),
    }
    apps = {name: make_app(p, engine) for name, p in profilers.items()}
    for name, profiler in profilers.items():  # warm up: imports, caches, metric series
        profiler.instrument(engine)
        for n in (*REQUEST_STATEMENTS, *SLOPE_STATEMENTS):
            per_request(apps[name], n, 50)
        profiler.uninstrument()

    request = added_per_request(profilers, apps, engine, args.rounds, args.requests)
    statement = callback_per_statement(
        profilers["with metrics"], apps["with metrics"], engine, args.requests
    )
    verdict = "within" if request < 10 and statement < 2 else "OVER"
    print(
        f"added by the metrics: {request:.2f} us per request + {statement:.2f} us per statement "
        f"({verdict} the target of 10 + 2)"
    )
    engine.dispose()


if __name__ == "__main__":
    main()
