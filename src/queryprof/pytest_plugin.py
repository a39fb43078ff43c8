"""queryprof's pytest plugin: query budgets, N+1 checks, a report and a baseline ratchet.

Registered through the ``pytest11`` entry point when queryprof is installed; ``-p
no:queryprof`` turns it off. Each test's body runs inside a process-wide scope, so the
statements of the application under test count wherever they run (Starlette's
``TestClient`` runs the app in a thread of its own). See docs/pytest.md.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from queryprof import _pytest_baseline as baseline
from queryprof._diagnosis import plural, scope_lines
from queryprof._pytest_budget import USAGE, Budget, BudgetError, from_marker
from queryprof._pytest_fixtures import query_budget, queryprof_scope
from queryprof._pytest_report import RunReport
from queryprof._pytest_session import (
    IN_CALL,
    RUN,
    WATCHER,
    Options,
    TestRun,
    Watcher,
)
from queryprof.scope import Scope

__all__ = ["query_budget", "queryprof_scope", "scope_of"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("queryprof", "queryprof: SQL statement budgets")
    group.addoption(
        "--queryprof-budget",
        metavar="N",
        default=None,
        help="fail a test without a query_budget marker that runs more than N statements "
        "(ini: queryprof_budget)",
    )
    group.addoption(
        "--queryprof-n-plus-one",
        choices=("fail", "warn", "off"),
        default=None,
        help="what an N+1 found in a test does: fail it, list it at the end (warn, the "
        "default) or nothing (ini: queryprof_n_plus_one)",
    )
    group.addoption(
        "--queryprof-n-plus-one-threshold",
        metavar="N",
        default=None,
        help="repeats of one statement from one line that make an N+1 in a test "
        "(default 3; ini: queryprof_n_plus_one_threshold)",
    )
    group.addoption(
        "--queryprof-report",
        action="store_true",
        default=False,
        help="print the tests that ran the most statements and every N+1 at the end",
    )
    group.addoption(
        "--queryprof-baseline",
        metavar="PATH",
        default=None,
        help="compare each test's statement count with PATH (a JSON file, made on first "
        "use): more fails the test, fewer is reported",
    )
    group.addoption(
        "--queryprof-baseline-update",
        action="store_true",
        default=False,
        help="rewrite the baseline file with this run's counts",
    )
    parser.addini("queryprof_budget", "default statement budget of a test", default="")
    parser.addini("queryprof_n_plus_one", "fail, warn or off (default warn)", default="warn")
    parser.addini(
        "queryprof_n_plus_one_threshold",
        "repeats that make an N+1 in a test (default 3)",
        default="3",
    )
    parser.addini(
        "queryprof_include_setup",
        "count statements run while fixtures are set up against marker budgets",
        type="bool",
        default=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{USAGE}: fail the test when its body runs more than n SQL statements (exactly n "
        "with exact=True); n_plus_one='fail'|'warn'|'off' decides what an N+1 does (queryprof)",
    )
    watcher = Watcher(Options.from_config(config))
    if watcher.options.baseline is not None:
        try:
            watcher.baseline = baseline.load(watcher.options.baseline)
        except baseline.BaselineError as exc:
            raise pytest.UsageError(f"queryprof: {exc}") from None
    config.stash[WATCHER] = watcher
    config.pluginmanager.register(RunReport(config, watcher), _REPORT)


def pytest_unconfigure(config: pytest.Config) -> None:
    watcher = config.stash.get(WATCHER, None)
    if watcher is not None:
        watcher.uninstrument()
    report = config.pluginmanager.get_plugin(_REPORT)
    if report is not None:
        config.pluginmanager.unregister(report)


_REPORT = "queryprof-report"


def scope_of(item: pytest.Item) -> Scope | None:
    """The scope the plugin opened for ``item``, if any (for fixtures that check scopes)."""
    run = item.stash.get(RUN, None)
    return run.scope if run is not None else None


# -- one test: setup, call, teardown ------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture is set up: check the marker, open the scope if setup counts."""
    watcher = item.config.stash[WATCHER]
    if not watcher.wants(item):
        watcher.uninstrument()
        return
    budget = _budget(item)
    watcher.instrument()
    run = item.stash[RUN] = TestRun(item, budget, watcher)
    if run.include_setup:
        run.open()


def _budget(item: pytest.Item) -> Budget:
    marker = item.get_closest_marker("query_budget")
    if marker is None:
        return Budget()
    try:
        return from_marker(marker.args, marker.kwargs)
    except BudgetError as exc:
        error = str(exc)
    pytest.fail(error, pytrace=False)  # outside the except block: no chained traceback


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    run = item.stash.get(RUN, None)
    if run is not None:
        run.open()
    item.stash[IN_CALL] = True
    try:
        yield
    except BaseException:
        item.stash[IN_CALL] = False
        _finish(item, failed=True)
        raise
    item.stash[IN_CALL] = False
    message = _finish(item, failed=False)
    if message:
        pytest.fail(message, pytrace=False)


def _finish(item: pytest.Item, *, failed: bool) -> str | None:
    run = item.stash.get(RUN, None)  # again: a fixture asked for in the body may have made it
    if run is None:
        return None
    message = run.finish(item.config.stash[WATCHER])
    if failed and (run.n is not None or "queryprof_scope" in getattr(item, "fixturenames", ())):
        # The test failed on its own: what it ran often explains why.
        item.add_report_section("call", "queryprof", _ran(run))
    return message


def _ran(run: TestRun) -> str:
    headline = f"{run.name} ran {plural(run.scope.query_count, 'statement')}"
    return "\n".join([headline, *scope_lines(run.scope)])


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    run = item.stash.get(RUN, None)
    if run is not None:
        run.scope.close()  # setup failed, the call never ran: the scope must not stay open


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    run = item.stash.get(RUN, None)
    if call.when == "call" and run is not None and run.result is not None:
        # A plain attribute travels with the report from an xdist worker to the controller.
        report.queryprof = run.result.as_json()  # type: ignore[attr-defined]
    return report
