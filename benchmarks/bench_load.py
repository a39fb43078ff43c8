"""End-to-end overhead under real load: the example blog on PostgreSQL, driven by wrk.

    make bench-load          # builds .venv-bench (SQLAlchemy 2.0) and runs this with defaults
    .venv-bench/bin/python benchmarks/bench_load.py [--rounds 5] [--workers 1,2] [--scale 1]
        [--connections 10] [--memory-requests 100000] [--skip-memory] [--profile 20]

The blog (``examples/blog``) is served by uvicorn (1 worker, then 2) on PostgreSQL through
asyncpg, in four configurations, each its own server process:

1. ``bare``: no instrumentation, the limit;
2. ``queryprof``: ``Profiler()`` with everything on (capture, detectors, findings logged,
   Prometheus metrics, EXPLAIN of slow queries) and its middleware;
3. ``otel``: opentelemetry-instrumentation-sqlalchemy on the engine, with the SDK's
   ``TracerProvider`` and no span processor (spans are made and dropped, nothing exported);
4. ``instrumentator``: prometheus-fastapi-instrumentator (HTTP metrics only), for scale.

wrk (a separate process, on loopback, one thread, a fixed number of connections) sends a
fixed number of requests to one endpoint of one server at a time. The four servers run side
by side, idle but for the one under load; each round runs every endpoint against every
configuration back to back (the order rotating between rounds), so the noise of a shared
machine hits all alike. Per configuration and endpoint: requests per second, p50 and p99
latency (medians over the rounds), the ratio to bare, and the server's CPU time per request
(from ``/proc/<pid>/task/*/schedstat``, which waiting on a busy machine does not inflate):
the difference to bare, divided by the statements of the request, is the time each
configuration adds per query.

The memory check (a phase of the same run) serves queryprof alone, sends it ``100_000``
requests spread over every read route, 404s, unmatched raw paths and ``GET
/reports/shapes/{variant}`` (thousands of distinct statement shapes, more than queryprof's
caches hold) and prints the server's RSS and queryprof's cache sizes as it goes: growth must
stop at the caches' bounds, not follow the traffic.

``--profile SECONDS`` runs py-spy (``pip install py-spy`` into .venv-bench) on the queryprof
server under the pk-lookup and typical-page load and prints where queryprof's own samples go.

Results: printed as markdown, and written to ``benchmarks/results/load-<time>.md`` and
``.json``. Needs wrk (``apt-get install wrk``) and PostgreSQL (``--database-url``, default
``postgresql+asyncpg://postgres@127.0.0.1:5432/queryprof_bench``, created if missing).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/queryprof_bench"
CONFIGS = ("bare", "queryprof", "otel", "instrumentator")
CONFIG_TITLES = {
    "bare": "bare",
    "queryprof": "queryprof (all on)",
    "otel": "otel-sqlalchemy (SDK, no exporter)",
    "instrumentator": "prometheus-fastapi-instrumentator",
}
BASE_PORT = 18700
SHAPE_VARIANTS = 20_000  # memory check: distinct statement shapes, > queryprof's caches
# (100,000 requests ask for 15,000 of them: more than the shape cache's 4096 entries and
# the call-site hints' 10,000)


@dataclass(frozen=True)
class Endpoint:
    name: str
    queries: int  # SQL statements per request (pool pre-ping and BEGIN/ROLLBACK excluded)
    requests: int  # per measurement, at --scale 1
    lua_path: str  # a Lua expression of the request counter ``i``


def endpoints(authors: int) -> tuple[Endpoint, ...]:
    """With the default 50 authors: the eager list has 50 rows (and their 150 posts), the
    N+1 makes 51 queries."""
    pages = max(1, min(20, authors * 3 // 10))
    return (
        Endpoint("pk lookup", 1, 400, f'"/authors/" .. (i % {authors} + 1)'),
        Endpoint("typical page", 5, 120, f'"/posts?size=10&page=" .. (i % {pages} + 1)'),
        Endpoint(f"{authors} rows, eager", 2, 100, '"/authors/eager"'),
        Endpoint(f"N+1, {authors + 1} queries", authors + 1, 24, '"/authors"'),
    )


# -- the server side: imported by uvicorn in the server processes ---------------------------------


def server_app() -> Any:
    """The app of one configuration (``BENCH_CONFIG``), for ``uvicorn --factory``."""
    sys.path.insert(0, str(ROOT))
    from examples.blog.app import create_app

    config = os.environ["BENCH_CONFIG"]
    url = os.environ["BENCH_DATABASE_URL"]
    authors = int(os.environ["BENCH_AUTHORS"])
    profiler = None
    if config == "bare":
        app = create_app(url, seed_authors=authors)
    elif config == "queryprof":
        from queryprof import Profiler

        profiler = Profiler()  # every default: capture, detectors, logging, metrics, EXPLAIN
        app = create_app(url, profiler=profiler, seed_authors=authors)
    elif config == "otel":
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
        from opentelemetry.sdk.trace import TracerProvider

        provider = TracerProvider()  # no span processor: nothing exported

        def instrument(engine: Any) -> None:
            SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, tracer_provider=provider)

        app = create_app(url, seed_authors=authors, on_engine=instrument)
    elif config == "instrumentator":
        from prometheus_fastapi_instrumentator import Instrumentator

        app = create_app(url, seed_authors=authors)
        Instrumentator().instrument(app).expose(app)
    else:
        raise ValueError(f"BENCH_CONFIG={config!r}: one of {', '.join(CONFIGS)}")

    async def stats(request: Any) -> Any:
        from starlette.responses import JSONResponse

        return JSONResponse({"pid": os.getpid(), "rss_kb": rss_kb(os.getpid()), **caches()})

    def caches() -> dict[str, Any]:
        if profiler is None:
            return {}
        from queryprof import callsite, fingerprint
        from queryprof.detect import _common
        from queryprof.export import prometheus

        metrics = profiler._metrics.metrics
        return {
            "shape_cache": fingerprint.shape_cache_stats(),
            "callsite_classifier": callsite.cache_stats(),
            "callsite_hints": len(callsite._hints),
            "locations": len(_common._locations),
            "metric_label_sets": len(metrics.routes),
            "metric_series": sum(
                len(h._series)
                for h in (
                    metrics.request_queries,
                    metrics.request_db_duration,
                    metrics.request_duration,
                    metrics.query_duration,
                    metrics.txn_duration,
                )
            ),
            "explain": profiler.explainer.stats() if profiler.explainer else None,
            "route_cache_size": prometheus.ROUTE_CACHE_SIZE,
        }

    app.add_route("/_bench/stats", stats)
    return app


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# -- the driver side ------------------------------------------------------------------------------


class Server:
    """One uvicorn of one configuration, on its own port."""

    def __init__(self, config: str, workers: int, port: int, args: argparse.Namespace) -> None:
        self.config, self.workers, self.port = config, workers, port
        env = {
            **os.environ,
            "BENCH_CONFIG": config,
            "BENCH_DATABASE_URL": args.database_url,
            "BENCH_AUTHORS": str(args.authors),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.multiproc_dir: str | None = None
        if workers > 1 and config in ("queryprof", "instrumentator"):
            # Several workers: the Prometheus metrics are only right summed over the shared
            # files, which is what users of both run (and it costs more per observation).
            self.multiproc_dir = tempfile.mkdtemp(prefix=f"bench-{config}-")
            env["PROMETHEUS_MULTIPROC_DIR"] = self.multiproc_dir
        self.log_path = Path(tempfile.gettempdir()) / f"bench_load-{config}-{workers}w.log"
        command = [
            sys.executable, "-m", "uvicorn", "bench_load:server_app", "--factory",
            "--app-dir", str(BENCH_DIR), "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--no-access-log", "--log-level", "warning",
            "--loop", args.loop, "--http", args.http,
        ]  # fmt: skip
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.pids: list[int] = []

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.config} server exited; see {self.log_path}")
            with contextlib.suppress(OSError):
                self.stats()
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"{self.config} server did not start; see {self.log_path}")
        # Wait for every worker (a second one may still be starting), then find their pids.
        while time.monotonic() < deadline:
            self.pids = worker_pids(self.process.pid, self.workers)
            if len(self.pids) == self.workers:
                return
            time.sleep(0.2)
        raise SystemExit(f"{self.config}: expected {self.workers} workers, found {self.pids}")

    def stats(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/_bench/stats"
        with urllib.request.urlopen(url, timeout=5) as response:
            result: dict[str, Any] = json.load(response)
            return result

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def rss_kb(self) -> int:
        return sum(rss_kb(pid) for pid in self.pids)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # py-spy writes its profile on exit too
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        if self.multiproc_dir:
            shutil.rmtree(self.multiproc_dir, ignore_errors=True)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def worker_pids(pid: int, workers: int) -> list[int]:
    """The processes that serve requests: uvicorn itself with one worker, else its workers."""
    candidates = [pid]
    for _ in range(3):
        pythons = [p for p in candidates if is_uvicorn(p)]
        if pythons and (workers == 1 or pythons != [pid]):
            if workers == 1:
                return pythons[:1]
            return [p for p in pythons if p != pid]
        candidates = [c for p in candidates for c in children(p)]
    return []


def is_uvicorn(pid: int) -> bool:
    """uvicorn itself or one of its workers; not py-spy, not multiprocessing's resource
    tracker (a Python child of uvicorn too)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if b"python" not in cmdline or b"py-spy" in cmdline.split(b"\0")[0]:
        return False
    return b"uvicorn" in cmdline or b"spawn_main" in cmdline


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of a process, in ns precision (schedstat)."""
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


LUA = """
local i = %(start)d
local limit = %(limit)d
local seen = 0
request = function()
  i = i + 1
  return wrk.format(%(method)s, %(path)s)
end
response = function(status, headers, body)
  seen = seen + 1
  if seen == limit then
    wrk.thread:stop()
    -- wrk's main thread sleeps out -d whatever its threads do: the driver ends the sleep
    -- with SIGINT when it reads this line.
    io.write("WRK_LIMIT\\n")
    io.stdout:flush()
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %%d, "duration_us": %%d, "non_2xx": %%d, "errors": %%d, ' ..
    '"p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "mean_us": %%.1f, "max_us": %%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    latency.max))
end
"""


def run_wrk(
    port: int,
    path: str,
    requests: int,
    args: argparse.Namespace,
    start: int = 0,
    method: str = "nil",
) -> dict[str, Any]:
    """wrk against one server until ``requests`` responses; returns its numbers."""
    script = LUA % {"start": start, "limit": requests, "path": path, "method": method}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    command = [
        "wrk", "-t1", f"-c{args.connections}", f"-d{args.max_seconds}s",
        "--timeout", "30s", "-s", f.name, f"http://127.0.0.1:{port}",
    ]  # fmt: skip
    try:
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as wrk:
            assert wrk.stdout is not None
            output = []
            for line in wrk.stdout:
                output.append(line)
                if line.startswith("WRK_LIMIT"):
                    wrk.send_signal(signal.SIGINT)
            if wrk.wait() != 0:
                raise SystemExit(f"wrk failed: {''.join(output)}")
    finally:
        os.unlink(f.name)
    stdout = "".join(output)
    match = re.search(r"^WRK_RESULT (.*)$", stdout, re.MULTILINE)
    if match is None:
        raise SystemExit(f"wrk gave no result:\n{stdout}")
    result: dict[str, Any] = json.loads(match.group(1))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # server CPU per request
    failed: int


@dataclass
class Results:
    samples: dict[tuple[int, str, str], list[Sample]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )


def measure(server: Server, endpoint: Endpoint, requests: int, args: argparse.Namespace) -> Sample:
    cpu = server.cpu_seconds()
    r = run_wrk(server.port, endpoint.lua_path, requests, args)
    cpu = server.cpu_seconds() - cpu
    return Sample(
        rps=r["rps"],
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        cpu_us=cpu / max(r["requests"], 1) * 1e6,
        failed=r["non_2xx"] + r["errors"],
    )


def load_phase(workers: int, args: argparse.Namespace, results: Results) -> None:
    eps = endpoints(args.authors)
    servers = [
        Server(c, workers, BASE_PORT + 10 * workers + i, args) for i, c in enumerate(args.configs)
    ]
    try:
        for s in servers:
            s.wait_ready()
        for s in servers:  # warm up: connections, caches, statement cache, metric series
            for ep in eps:
                measure(s, ep, max(50, int(ep.requests * args.scale) // 5), args)
        for round_ in range(args.rounds):
            order = servers[round_ % len(servers) :] + servers[: round_ % len(servers)]
            for ep in eps:
                for s in order:
                    sample = measure(s, ep, max(20, int(ep.requests * args.scale)), args)
                    results.samples[workers, ep.name, s.config].append(sample)
                    print(
                        f"  {workers}w round {round_ + 1}/{args.rounds} {ep.name:<16} "
                        f"{s.config:<15} {sample.rps:8.1f} req/s  p50 {sample.p50_ms:6.2f} ms  "
                        f"p99 {sample.p99_ms:6.2f} ms  cpu {sample.cpu_us:7.0f} us/req"
                        + (f"  FAILED {sample.failed}" if sample.failed else ""),
                        flush=True,
                    )
    finally:
        for s in servers:
            s.stop()


def summarize(results: Results, args: argparse.Namespace) -> dict[str, Any]:
    """Medians per (workers, endpoint, config), ratios to bare, added time per query."""
    eps = {ep.name: ep for ep in endpoints(args.authors)}
    rows = []
    added: dict[tuple[int, str], list[tuple[int, float]]] = collections.defaultdict(list)
    for (workers, name, config), samples in results.samples.items():
        bare = results.samples.get((workers, name, "bare"), [])
        row: dict[str, Any] = {
            "workers": workers,
            "endpoint": name,
            "queries": eps[name].queries,
            "config": config,
            "rounds": len(samples),
            "rps": statistics.median(s.rps for s in samples),
            "p50_ms": statistics.median(s.p50_ms for s in samples),
            "p99_ms": statistics.median(s.p99_ms for s in samples),
            "cpu_us_per_request": statistics.median(s.cpu_us for s in samples),
            "failed": sum(s.failed for s in samples),
        }
        if bare:
            # Each round's pair ran seconds apart: the ratio per round, then the median.
            ratios = [s.rps / b.rps for s, b in zip(samples, bare, strict=False)]
            row["rps_ratio"] = statistics.median(ratios)
            row["rps_ratio_range"] = [min(ratios), max(ratios)]
            cpu_added = [s.cpu_us - b.cpu_us for s, b in zip(samples, bare, strict=False)]
            row["cpu_added_us_per_request"] = statistics.median(cpu_added)
            row["cpu_added_us_per_query"] = row["cpu_added_us_per_request"] / eps[name].queries
            added[workers, config].append((eps[name].queries, row["cpu_added_us_per_request"]))
        rows.append(row)
    fits = {}
    for (workers, config), points in added.items():
        if config == "bare" or len(points) < 2:
            continue
        per_request, per_query = fit(points)
        fits[f"{workers}w {config}"] = {
            "workers": workers,
            "config": config,
            "per_request_us": per_request,
            "per_query_us": per_query,
        }
    return {"rows": rows, "fits": fits}


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares ``added = a + b * queries``: (a, b)."""
    mean_x = statistics.mean(x for x, _ in points)
    mean_y = statistics.mean(y for _, y in points)
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    b = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx if sxx else 0.0
    return mean_y - b * mean_x, b


def markdown(summary: dict[str, Any], machine: dict[str, Any], command: str) -> str:
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['system']}; "
        f"Python {machine['python']}, SQLAlchemy {machine['sqlalchemy']}, "
        f"{machine['postgresql']}, uvicorn {machine['uvicorn']} "
        f"(loop {machine['loop']}, http {machine['http']}), {machine['wrk']}; "
        f"queryprof at {machine['revision']}; wrk: 1 thread, {machine['connections']} "
        f"connections; seed: {machine['authors']} authors.",
        "",
        f"Command: `{command}`",
        "",
    ]
    by_workers: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for row in summary["rows"]:
        by_workers[row["workers"]].append(row)
    for workers, rows in sorted(by_workers.items()):
        lines += [
            f"**{workers} worker{'s' if workers > 1 else ''}** "
            f"(medians of {rows[0]['rounds']} rounds; ratio: per-round req/s over bare's, "
            "median [min..max]; CPU: server CPU time per request, added: over bare)",
            "",
            "| endpoint | configuration | req/s | ratio | p50 ms | p99 ms "
            "| CPU us/req | added us/req | added us/query |",
            "|---|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        order = {c: i for i, c in enumerate(CONFIGS)}
        names = list(dict.fromkeys(r["endpoint"] for r in rows))
        for r in sorted(rows, key=lambda r: (names.index(r["endpoint"]), order[r["config"]])):
            if r["config"] == "bare" or "rps_ratio" not in r:
                ratio = added = per_query = "-"
            else:
                low, high = r["rps_ratio_range"]
                ratio = f"{r['rps_ratio']:.3f} [{low:.2f}..{high:.2f}]"
                added = f"{r['cpu_added_us_per_request']:.0f}"
                per_query = f"{r['cpu_added_us_per_query']:.1f}"
            failed = f" ({r['failed']} failed)" if r["failed"] else ""
            lines.append(
                f"| {r['endpoint']} ({r['queries']}q) | {CONFIG_TITLES[r['config']]}{failed} "
                f"| {r['rps']:.0f} | {ratio} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
                f"| {r['cpu_us_per_request']:.0f} | {added} | {per_query} |"
            )
        lines.append("")
    if summary["fits"]:
        lines += [
            "Added server CPU time, fitted over the four endpoints as "
            "`per request + per query x queries`:",
            "",
            "| workers | configuration | per request us | per query us |",
            "|---|---|---:|---:|",
        ]
        for f in summary["fits"].values():
            lines.append(
                f"| {f['workers']} | {CONFIG_TITLES[f['config']]} | {f['per_request_us']:.0f} "
                f"| {f['per_query_us']:.1f} |"
            )
        lines.append("")
    lines += targets(summary)
    return "\n".join(lines)


def targets(summary: dict[str, Any]) -> list[str]:
    lines = ["Targets:", ""]
    for row in summary["rows"]:
        headline = row["endpoint"] in ("pk lookup", "typical page")
        if row["config"] == "queryprof" and headline and "rps_ratio" in row:
            ok = "met" if row["rps_ratio"] >= 0.95 else "MISSED"
            lines.append(
                f"- {row['workers']}w {row['endpoint']}: queryprof at "
                f"{row['rps_ratio']:.3f} of bare's throughput (>= 0.95: {ok})"
            )
    fits = summary["fits"]
    for workers in sorted({f["workers"] for f in fits.values()}):
        ours, theirs = fits.get(f"{workers}w queryprof"), fits.get(f"{workers}w otel")
        if ours and theirs and theirs["per_query_us"] > 0:
            share = ours["per_query_us"] / theirs["per_query_us"]
            ok = "met" if share <= 1 / 3 else "MISSED"
            lines.append(
                f"- {workers}w added time per query: queryprof {ours['per_query_us']:.1f} us, "
                f"otel-sqlalchemy {theirs['per_query_us']:.1f} us: {share:.2f} of it "
                f"(<= 0.33: {ok})"
            )
    lines.append("")
    return lines


# -- the memory check -----------------------------------------------------------------------------

# Mostly cheap requests (100,000 of them must fit in a few minutes), every route among them:
# 35% pk lookups, 30% unmatched raw paths, 5% missing authors (404), 15% distinct shapes, the
# rest the heavier pages (typical page, eager list, N+1, duplicates, comments loop).
MEMORY_MIX = """(function()
  local k = i %% 200
  if k < 70 then return "/authors/" .. (i %% %(authors)d + 1) end
  if k < 130 then return "/no/such/page/" .. i end
  if k < 140 then return "/authors/" .. (1000000 + i) end
  if k < 170 then  -- the j-th shape request: a permutation of the variants, all distinct
    local j = math.floor(i / 200) * 30 + (k - 140)
    return "/reports/shapes/" .. ((j * 7919) %% %(variants)d)
  end
  if k < 184 then return "/posts?size=10&page=" .. (i %% %(pages)d + 1) end
  if k < 190 then return "/authors/eager" end
  if k < 191 then return "/authors" end
  if k < 196 then return "/posts/" .. (i %% %(posts)d + 1) .. "/duplicate" end
  return "/posts/" .. (i %% %(posts)d + 1) .. "/comments-loop"
end)()"""


def memory_phase(args: argparse.Namespace) -> dict[str, Any]:
    """RSS of the queryprof server along ``--memory-requests`` requests of a wide mix."""
    server = Server("queryprof", 1, BASE_PORT + 1, args)
    path = MEMORY_MIX % {
        "authors": args.authors,
        "pages": max(1, args.authors * 3 // 10),
        "posts": args.authors * 3,
        "variants": SHAPE_VARIANTS,
    }
    chunks = 4
    chunk = max(1, args.memory_requests // chunks)
    points = []
    try:
        server.wait_ready()
        warm = max(2000, args.memory_requests // 50)
        start = 10**7  # the warm-up uses other counter values, so other shapes
        run_wrk(server.port, path, warm, args, start=start)
        print(f"memory check: queryprof, 1 worker, {warm} warm-up requests, then", flush=True)
        points.append({"requests": 0, "rss_kb": server.rss_kb(), **server.stats()})
        done = 0
        for _ in range(chunks):
            r = run_wrk(server.port, path, chunk, args, start=done)
            done += r["requests"]
            stats = server.stats()
            points.append({"requests": done, "rss_kb": server.rss_kb(), **stats})
            print(
                f"  {done:>7} requests ({r['rps']:.0f} req/s, {r['non_2xx']} 404s as intended): "
                f"RSS {points[-1]['rss_kb'] / 1024:.1f} MiB; shapes "
                f"{stats['shape_cache']['size']}/{stats['shape_cache']['max_size']}, "
                f"call-site hints {stats['callsite_hints']}, metric label sets "
                f"{stats['metric_label_sets']}, series {stats['metric_series']}",
                flush=True,
            )
    finally:
        server.stop()
    first, last = points[0]["rss_kb"], points[-1]["rss_kb"]
    steps = [b["rss_kb"] - a["rss_kb"] for a, b in itertools.pairwise(points)]
    return {
        "requests": points[-1]["requests"],
        "shape_variants": SHAPE_VARIANTS,
        "points": points,
        "rss_before_kb": first,
        "rss_after_kb": last,
        "growth_kb": last - first,
        "growth_per_chunk_kb": steps,
    }


def memory_markdown(memory: dict[str, Any]) -> str:
    lines = [
        f"Memory check: queryprof server, 1 worker, {memory['requests']} requests over every "
        f"read route, 404s, unmatched raw paths and {memory['shape_variants']} statement shapes",
        "",
        "| requests | RSS MiB | shape cache | call-site hints | metric label sets | series |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for p in memory["points"]:
        lines.append(
            f"| {p['requests']} | {p['rss_kb'] / 1024:.1f} "
            f"| {p['shape_cache']['size']}/{p['shape_cache']['max_size']} "
            f"| {p['callsite_hints']} | {p['metric_label_sets']} | {p['metric_series']} |"
        )
    steps = ", ".join(f"{s / 1024:+.1f}" for s in memory["growth_per_chunk_kb"])
    lines += [
        "",
        f"RSS {memory['rss_before_kb'] / 1024:.1f} -> {memory['rss_after_kb'] / 1024:.1f} MiB "
        f"({memory['growth_kb'] / 1024:+.1f} MiB; per quarter: {steps} MiB)",
        "",
    ]
    return "\n".join(lines)


# -- profiling ------------------------------------------------------------------------------------


def profile_phase(args: argparse.Namespace) -> str:
    """py-spy on the queryprof server under pk-lookup and typical-page load, attached after
    a warm-up so that start-up (imports) is not in the profile."""
    output = Path(tempfile.gettempdir()) / "bench_load-py-spy.txt"
    server = Server("queryprof", 1, BASE_PORT + 2, args)
    try:
        server.wait_ready()
        eps = endpoints(args.authors)[:2]
        for ep in eps:
            run_wrk(server.port, ep.lua_path, ep.requests, args)
        spy = subprocess.Popen(
            [args.py_spy, "record", "--pid", str(server.pids[0]), "--rate", "200", "--format",
             "raw", "--output", str(output), "--duration", str(int(args.profile)), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        while spy.poll() is None:
            for ep in eps:
                run_wrk(server.port, ep.lua_path, ep.requests // 2, args)
        if spy.returncode != 0:
            raise SystemExit(f"py-spy failed ({spy.returncode}): is ptrace allowed here?")
    finally:
        server.stop()
    return summarize_profile(output)


# queryprof frames that only pass control on: the app below the middleware, the driver
# below the statement listener, the server below the send wrapper. A sample whose deepest
# queryprof frame is one of these is the app's time, not queryprof's.
PASS_THROUGH = ("QueryProfilerMiddleware.__call__", "_profile")


def _passes_through(function: str) -> bool:
    # the middleware's send/receive wrappers pass on too
    return function in PASS_THROUGH or function.startswith("QueryProfilerMiddleware.__call__.")


def summarize_profile(path: Path) -> str:
    """Where queryprof's own samples go: per function (inclusive) and per leaf (self)."""
    total = ours = 0
    inclusive: collections.Counter[str] = collections.Counter()
    self_: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        total += count
        mine = [i for i, (_, function, ours_) in enumerate(frames) if ours_]
        if not mine or _passes_through(frames[mine[-1]][1]):
            continue
        ours += count
        for name in dict.fromkeys(frames[i][0] for i in mine):
            inclusive[name] += count
        self_[frames[-1][0]] += count
    lines = [
        f"py-spy: {total} samples of the queryprof server under load, {ours} of them "
        f"({ours / max(total, 1):.1%}) in queryprof's own code (the app and the driver called "
        "through it excluded)",
        "",
        "| queryprof function (inclusive) | share of all samples |",
        "|---|---:|",
    ]
    lines += [
        f"| {name} | {n / total:.1%} |"
        for name, n in inclusive.most_common(40)
        if not _passes_through(name.split(":", 1)[1])
    ][:25]
    lines += ["", "| leaf function in those samples (self) | share of all samples |", "|---|---:|"]
    lines += [f"| {name} | {n / total:.1%} |" for name, n in self_.most_common(20)]
    return "\n".join(lines) + "\n"


def _frame(frame: str) -> tuple[str, str, bool]:
    """``("queryprof/capture.py:_record", "_record", True)`` from a py-spy raw frame,
    ``"function (path/to/file.py:123)"``; the bool: a queryprof frame."""
    match = re.match(r"(.*) \((.*?):(\d+)\)$", frame)
    if not match:
        return frame, frame, False
    function, filename, _ = match.groups()
    ours = filename.startswith("queryprof/") or "/queryprof/" in filename
    parts = Path(filename).parts
    short = "/".join(parts[parts.index("queryprof") :]) if "queryprof" in parts else parts[-1]
    return f"{short}:{function}", function, ours


# -- setup ----------------------------------------------------------------------------------------


async def prepare_database(url: str, authors: int) -> str:
    """Create the database if missing and seed it once (the servers then find it seeded)."""
    import asyncpg
    from sqlalchemy import func, select
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    sys.path.insert(0, str(ROOT))
    from examples.blog.db import create_session_factory
    from examples.blog.models import Author
    from examples.blog.seed import create_schema, drop_schema, seed_if_empty

    parsed = make_url(url)
    admin = await asyncpg.connect(
        host=parsed.host, port=parsed.port or 5432, user=parsed.username, database="postgres"
    )
    try:
        if not await admin.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", parsed.database
        ):
            await admin.execute(f'CREATE DATABASE "{parsed.database}"')
        version = await admin.fetchval("SHOW server_version")
    finally:
        await admin.close()
    engine = create_async_engine(url)
    try:
        await create_schema(engine)
        factory = create_session_factory(engine)
        async with factory() as session:
            count = await session.scalar(select(func.count()).select_from(Author))
        if count not in (0, authors):
            await drop_schema(engine)
            await create_schema(engine)
        if await seed_if_empty(factory, authors=authors):
            print(f"seeded {authors} authors, {authors * 3} posts, {authors * 6} comments")
    finally:
        await engine.dispose()
    return f"PostgreSQL {version}"


def revision() -> str:
    """The commit benchmarked, ``+dirty`` with uncommitted changes (for tracking over time)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def machine_info(args: argparse.Namespace, postgresql: str) -> dict[str, Any]:
    import sqlalchemy
    import uvicorn

    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(" [")[0]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlalchemy": sqlalchemy.__version__,
        "postgresql": postgresql,
        "uvicorn": uvicorn.__version__,
        "loop": args.loop,
        "http": args.http,
        "wrk": wrk.strip(),
        "revision": revision(),
        "connections": args.connections,
        "authors": args.authors,
    }


def resolved(kind: str) -> str:
    """What uvicorn's "auto" picks here: uvloop/httptools when installed."""
    module = {"loop": "uvloop", "http": "httptools"}[kind]
    try:
        __import__(module)
    except ImportError:
        return {"loop": "asyncio", "http": "h11"}[kind]
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated")
    parser.add_argument("--scale", type=float, default=1.0, help="requests per measurement")
    parser.add_argument("--connections", type=int, default=10, help="wrk's concurrency")
    parser.add_argument(
        "--authors", type=int, default=50, help="seed size (3 posts each): the N+1's N"
    )
    parser.add_argument("--memory-requests", type=int, default=100_000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--profile", type=float, default=0, help="seconds of py-spy; 0: none")
    parser.add_argument("--max-seconds", type=int, default=300, help="cap of one wrk run")
    parser.add_argument("--loop", default="auto", help="uvicorn --loop")
    parser.add_argument("--http", default="auto", help="uvicorn --http")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    args = parser.parse_args()
    args.workers_list = [int(w) for w in args.workers.split(",") if w]
    args.configs = [c for c in args.configs.split(",") if c]
    if "bare" not in args.configs:
        args.configs.insert(0, "bare")
    args.py_spy = None
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    command = "python benchmarks/bench_load.py " + " ".join(sys.argv[1:])
    postgresql = asyncio.run(prepare_database(args.database_url, args.authors))
    machine = machine_info(args, postgresql)
    machine["loop"] = resolved("loop") if args.loop == "auto" else args.loop
    machine["http"] = resolved("http") if args.http == "auto" else args.http
    started = time.monotonic()
    report: dict[str, Any] = {"machine": machine, "command": command, "args": vars(args).copy()}
    report["args"].pop("py_spy", None)
    text = []
    if not args.skip_load:
        results = Results()
        for workers in args.workers_list:
            load_phase(workers, args, results)
        summary = summarize(results, args)
        report["load"] = summary
        report["samples"] = [
            {"workers": w, "endpoint": e, "config": c, **vars(sample)}
            for (w, e, c), samples in results.samples.items()
            for sample in samples
        ]
        text.append(markdown(summary, machine, command))
    if not args.skip_memory:
        memory = memory_phase(args)
        report["memory"] = memory
        text.append(memory_markdown(memory))
    if args.profile:
        args.py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(args.py_spy).exists():
            raise SystemExit("--profile needs py-spy: .venv-bench/bin/pip install py-spy")
        profile = profile_phase(args)
        report["profile"] = profile
        text.append(profile)
    report["seconds"] = time.monotonic() - started
    out = "\n".join(text)
    print("\n" + out)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS_DIR / f"load-{stamp}.md").write_text(out)
    (RESULTS_DIR / f"load-{stamp}.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"written: benchmarks/results/load-{stamp}.md and .json ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
