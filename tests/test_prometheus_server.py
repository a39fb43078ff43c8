"""The dashboard against a real Prometheus server scraping the example blog.

A module fixture serves the blog (uvicorn, 127.0.0.1) with a profiler on short thresholds,
sends it traffic with every kind of finding in a thread, and runs Prometheus on it with a 1 s
scrape interval. Then every PromQL expression of ``dashboards/queryprof.json`` must return
data through Prometheus's HTTP API. The structural checks of the dashboard need no server.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from examples.blog.app import create_app
from prometheus_client import CollectorRegistry

from metrics_support import (
    ROOT,
    TRACE_ID,
    SampledSpan,
    free_port,
    prometheus_binaries,
    served,
)
from queryprof import Profiler

DASHBOARD = ROOT / "dashboards" / "queryprof.json"
JOB = "queryprof-blog"
RATE_INTERVAL = "5s"  # what Grafana's $__rate_interval comes to with a 1 s scrape interval
RANGE = "5m"  # the dashboard's time range ($__range): all of this test
BLOG_ROUTES = {
    "/authors",
    "/authors/eager",
    "/authors/{author_id}",
    "/authors/{author_id}/bulk-comments",
    "/posts",
    "/posts/{post_id}/duplicate",
    "/posts/{post_id}/comments-loop",
    "/posts/{post_id}/views",
    "/reports/slow",
    "__unmatched__",
}


# --------------------------------------------------------------------------- the dashboard


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def expressions(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL with Grafana variables) of every panel target."""
    return [
        (f"{panel['title']} [{target['refId']}]", target["expr"])
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]


def variable_queries(board: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(variable, metric selector, label) of every ``label_values(selector, label)`` query."""
    found = []
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"])
        assert match, variable
        found.append((variable["name"], match.group(1), match.group(2)))
    return found


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's substitution of ``$var``, ``${var}`` and ``[[var]]``."""
    return _VARIABLE.sub(lambda m: values[next(g for g in m.groups() if g)], expr)


def all_values(**concrete: str) -> dict[str, str]:
    """The variables as Grafana renders them with "All" selected (allValue ``.*``)."""
    return {
        "datasource": "prometheus",
        "job": ".*",
        "instance": ".*",
        "route": ".*",
        "__rate_interval": RATE_INTERVAL,
        "__range": RANGE,
        "__interval": "1s",
        **concrete,
    }


def promql_regex(value: str) -> str:
    """A value as Grafana puts a selected variable into ``=~"..."``: regex-escaped, then
    escaped again for the PromQL string."""
    return re.escape(value).replace("\\", "\\\\")


def overlaps(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in panels(dashboard())]
    assert len(ids) == len(set(ids)), ids


def test_panels_do_not_overlap_and_fit_the_grid() -> None:
    placed = [(panel["title"], panel["gridPos"]) for panel in panels(dashboard())]
    for title, grid in placed:
        assert 0 <= grid["x"] < grid["x"] + grid["w"] <= 24, title
        assert 0 <= grid["y"] < grid["y"] + grid["h"], title
    for i, (title, grid) in enumerate(placed):
        for other, other_grid in placed[i + 1 :]:
            assert not overlaps(grid, other_grid), (title, other)


def test_every_variable_used_is_defined() -> None:
    board = dashboard()
    defined = {variable["name"] for variable in board["templating"]["list"]}
    assert {"datasource", "job", "instance", "route"} <= defined
    text = DASHBOARD.read_text()
    used = {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(text)}
    builtin = {name for name in used if name.startswith("__")}
    assert used - builtin <= defined, used - builtin - defined
    assert builtin <= {"__rate_interval", "__range", "__interval"}


def test_every_datasource_goes_through_the_variable() -> None:
    board = dashboard()
    (variable,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert variable["name"] == "datasource"
    assert variable["query"] == "prometheus"
    references = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                if key == "datasource":
                    references.append(child)
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(board)
    assert len(references) > len(panels(board))
    for reference in references:
        assert reference == {"type": "prometheus", "uid": "${datasource}"}, reference


def test_the_dashboard_has_the_rows_the_issue_lists() -> None:
    board = dashboard()
    rows = [panel["title"] for panel in board["panels"] if panel["type"] == "row"]
    assert rows == [
        "Overview",
        "Queries per request by route",
        "Query latency by operation",
        "Findings",
        "Transactions",
        "Connection pool",
    ]
    assert board["schemaVersion"] >= 39
    exemplars = [t for p in panels(board) for t in p.get("targets", []) if t.get("exemplar")]
    assert any("queryprof_findings_total" in t["expr"] for t in exemplars)


def check_rules(
    promtool: Path, exprs: list[str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """``promtool check rules`` on recording rules made of ``exprs``: Prometheus's parser."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    return subprocess.run(
        [str(promtool), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_expression_parses(tmp_path: Path) -> None:
    _, promtool = prometheus_binaries()
    board = dashboard()
    exprs = [substitute(expr, all_values()) for _, expr in expressions(board)]
    exprs += [f"group by ({label}) ({substitute(selector, all_values())})"
              for _, selector, label in variable_queries(board)]  # fmt: skip
    result = check_rules(promtool, exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
    # The check can fail: one unbalanced parenthesis is reported.
    broken = check_rules(promtool, [*exprs, "sum(rate(queryprof_findings_total[5m])"], tmp_path)
    assert broken.returncode != 0


def test_the_example_prometheus_config_is_valid() -> None:
    _, promtool = prometheus_binaries()
    config = ROOT / "examples" / "observability" / "prometheus.yml"
    result = subprocess.run(
        [str(promtool), "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- the live stack


def traffic(base_url: str, stop: threading.Event, sent: list[int]) -> None:
    """The blog's good and bad endpoints, in a loop, plus raw URLs of every kind."""
    i = 0
    with httpx.Client(base_url=base_url, timeout=30) as client:
        while not stop.is_set():
            i += 1
            post = i % 60 + 1
            for method, url in (
                ("GET", "/authors"),  # N+1
                ("GET", "/authors/eager"),
                ("GET", f"/posts/{post}/duplicate"),  # duplicate
                ("GET", f"/posts?page={i % 5 + 1}"),
                ("GET", "/reports/slow?seconds=0.03"),  # slow query
                ("POST", f"/posts/{post}/views?hold=0.12"),  # long transaction
                ("POST", f"/authors/{i % 20 + 1}/bulk-comments?count=5"),  # repeated writes
                ("GET", f"/posts/{post}/comments-loop"),
                ("GET", f"/authors/{i * 7919 % 100_000}"),  # mostly 404s from the endpoint
                ("GET", f"/no/such/page/{i}"),  # unmatched
                ("GET", "/authors/"),  # a trailing-slash redirect
            ):
                client.request(method, url)
                sent[0] += 1


@dataclass
class Stack:
    prometheus: str  # base URL of the Prometheus HTTP API
    app: str  # base URL of the blog
    instance: str  # the blog's instance label
    promtool: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, "prometheus exited; see its log above"
        try:
            if httpx.get(url + "/-/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "prometheus did not become ready"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus, promtool = prometheus_binaries()
    tmp = tmp_path_factory.mktemp("prometheus")
    profiler = Profiler(
        registry=CollectorRegistry(),
        slow_query_threshold=0.01,
        long_transaction_threshold=0.1,
        log_findings=False,
    )
    blog = create_app(f"sqlite+aiosqlite:///{tmp / 'blog.db'}", profiler=profiler)
    stop, sent = threading.Event(), [0]
    with served(SampledSpan(blog)) as app_url:
        worker = threading.Thread(target=traffic, args=(app_url, stop, sent), daemon=True)
        worker.start()
        instance = app_url.removeprefix("http://")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "static_configs": [{"targets": [instance]}],
                }
            ],
        }
        (tmp / "prometheus.yml").write_text(json.dumps(config))
        port = free_port()
        process = subprocess.Popen(
            [
                str(prometheus),
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--enable-feature=exemplar-storage",
                "--log.level=warn",
            ],
            cwd=tmp,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, process)
            yield Stack(url, app_url, instance, promtool)
        finally:
            stop.set()
            process.terminate()
            process.wait(20)
            worker.join(30)
            profiler.uninstrument()
    assert sent[0] > 0


def returns_data(stack: Stack, exprs: list[tuple[str, str]], timeout: float = 40) -> list[str]:
    """The expressions that still return no sample (or only NaN) when ``timeout`` is over.

    Polled, because the series arrive with the scrapes: the first findings of each kind a
    second or two after the start, and rate() needs two samples in its window."""
    pending = dict(exprs)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for where, expr in list(pending.items()):
            values = [float(r["value"][1]) for r in stack.query(expr)]
            if any(not math.isnan(v) for v in values):
                del pending[where]
        time.sleep(0.5)
    return [f"{where}: {expr}" for where, expr in pending.items()]


def test_every_dashboard_expression_returns_data(stack: Stack) -> None:
    board = dashboard()
    exprs = [(where, substitute(expr, all_values())) for where, expr in expressions(board)]
    assert len(exprs) >= 20
    assert returns_data(stack, exprs) == []
    # The job and instance filters match what Prometheus attaches to the scraped series.
    concrete = all_values(job=JOB, instance=promql_regex(stack.instance))
    exprs = [(where, substitute(expr, concrete)) for where, expr in expressions(board)]
    assert returns_data(stack, exprs, timeout=5) == []


def test_every_dashboard_variable_has_values(stack: Stack) -> None:
    board = dashboard()
    found = {}
    for name, selector, label in variable_queries(board):
        response = httpx.get(
            f"{stack.prometheus}/api/v1/label/{label}/values",
            params={"match[]": substitute(selector, all_values())},
            timeout=10,
        )
        found[name] = set(response.json()["data"])
    assert found["job"] == {JOB}
    assert found["instance"] == {stack.instance}
    assert {"/authors", "/reports/slow", "/posts/{post_id}/views"} <= found["route"]


def test_routes_are_templates_whatever_the_raw_urls(stack: Stack) -> None:
    unmatched = 'queryprof_http_request_queries_count{http_route="__unmatched__"}'
    assert returns_data(stack, [("unmatched", unmatched)]) == []
    routes = {
        r["metric"]["http_route"] for r in stack.query("queryprof_http_request_queries_count")
    }
    assert routes <= BLOG_ROUTES
    assert "__unmatched__" in routes


def test_findings_carry_trace_exemplars_into_prometheus(stack: Stack) -> None:
    deadline = time.monotonic() + 30
    exemplars: list[dict[str, Any]] = []
    while not exemplars and time.monotonic() < deadline:
        now = time.time()
        response = httpx.get(
            f"{stack.prometheus}/api/v1/query_exemplars",
            params={
                "query": 'queryprof_findings_total{kind="n_plus_one"}',
                "start": now - 300,
                "end": now,
            },
            timeout=10,
        )
        exemplars = [e for s in response.json()["data"] for e in s["exemplars"]]
        time.sleep(0.5)
    assert exemplars, "no exemplar reached Prometheus"
    assert {e["labels"]["trace_id"] for e in exemplars} == {f"{TRACE_ID:032x}"}


def test_promtool_accepts_the_exposition(stack: Stack) -> None:
    exposition = httpx.get(stack.app + "/metrics", timeout=10).text
    assert "queryprof_findings_total" in exposition
    result = subprocess.run(
        [str(stack.promtool), "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
