"""The plugin's state in one pytest session: its options, its profiler, each test's scope.

Kept on ``config.stash`` (never in module globals), so an inner pytest run by ``pytester``
in the same process has a state of its own.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from queryprof import _pytest_baseline as baseline
from queryprof._diagnosis import SQL_WIDTH, display, plural, scope_lines
from queryprof._profiler import Profiler
from queryprof._pytest_budget import Budget, BudgetError, Mode, check_count, check_mode, verdict
from queryprof.fingerprint import shorten
from queryprof.scope import Scope

FIXTURES = frozenset(("query_budget", "queryprof_scope"))


@dataclass(frozen=True, slots=True)
class Options:
    """The command line and ini options, checked."""

    budget: int | None = None
    n_plus_one: Mode = "warn"
    threshold: int = 3
    include_setup: bool = False
    report: bool = False
    baseline: Path | None = None
    update: bool = False

    @property
    def watch_every_test(self) -> bool:
        return (
            self.budget is not None
            or self.n_plus_one != "off"
            or self.report
            or self.baseline is not None
        )

    @classmethod
    def from_config(cls, config: pytest.Config) -> Options:
        def option(name: str) -> Any:
            value = config.getoption(name, None)
            return config.getini(name) if value is None else value

        try:
            budget = option("queryprof_budget")
            threshold = check_count("queryprof_n_plus_one_threshold", _int(option(_THRESHOLD)))
            if threshold < 2:
                raise BudgetError(f"{_THRESHOLD} must be at least 2, not {threshold}")
            path = config.getoption("queryprof_baseline")
            update = bool(config.getoption("queryprof_baseline_update"))
            if update and path is None:
                raise BudgetError("--queryprof-baseline-update needs --queryprof-baseline=PATH")
            return cls(
                budget=check_count("queryprof_budget", _int(budget)) if budget != "" else None,
                n_plus_one=check_mode("queryprof_n_plus_one", option("queryprof_n_plus_one")),
                threshold=threshold,
                include_setup=bool(option("queryprof_include_setup")),
                report=bool(config.getoption("queryprof_report")),
                baseline=config.invocation_params.dir / path if path is not None else None,
                update=update,
            )
        except BudgetError as exc:
            raise pytest.UsageError(f"queryprof: {exc}") from None


_THRESHOLD = "queryprof_n_plus_one_threshold"


def _int(value: object) -> object:
    """An ini value is a string: ``"5"`` -> 5; anything else is left for the check to reject."""
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return value
    return value


@dataclass
class Result:
    """What one test ran, as it travels in its report (from an xdist worker, too)."""

    queries: int
    mode: str
    n_plus_one: list[str]
    shapes: dict[str, int] | None

    def as_json(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "mode": self.mode,
            "n_plus_one": self.n_plus_one,
            "shapes": self.shapes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        return cls(data["queries"], data["mode"], list(data["n_plus_one"]), data["shapes"])


class TestRun:
    """One test's scope and what it may run."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, item: pytest.Item, budget: Budget, watcher: Watcher) -> None:
        options = watcher.options
        self.name = item.name
        self.nodeid = item.nodeid
        self.n = budget.n if budget.n is not None else options.budget
        self.exact = budget.exact
        self.mode: Mode = budget.n_plus_one or options.n_plus_one
        self.mode_source = (
            f"query_budget(n_plus_one={self.mode!r})"
            if budget.n_plus_one
            else f"--queryprof-n-plus-one={self.mode}"
        )
        self.include_setup = (
            budget.include_setup if budget.include_setup is not None else options.include_setup
        )
        self.scope = watcher.profiler.scope(item.nodeid, kind="test", process_wide=True)
        self.opened = False
        self.result: Result | None = None

    def open(self) -> None:
        if not self.opened:
            self.opened = True
            self.scope.open()

    def finish(self, watcher: Watcher) -> str | None:
        """Close the scope; the failure message if the test broke a rule, else None."""
        self.scope.close()
        count = self.scope.query_count
        n_plus_one = [f for f in self.scope.findings if f.kind == "n_plus_one"]
        shapes = _shapes(self.scope) if watcher.options.baseline is not None else None
        self.result = Result(count, self.mode, [str(f) for f in n_plus_one], shapes)

        problems = []
        broken = verdict(count, self.n, self.exact)
        if broken:
            problems.append(f"{self.name} {broken}")
        if n_plus_one and self.mode == "fail":
            found = plural(len(n_plus_one), "N+1 pattern")
            problems.append(f"{self.name} ran {found} ({self.mode_source})")
        if shapes is not None and not watcher.options.update:
            problems.extend(self._against_baseline(watcher, count, shapes))
        if not problems:
            return None
        return "\n".join([*problems, *scope_lines(self.scope)])

    def _against_baseline(self, watcher: Watcher, count: int, shapes: dict[str, int]) -> list[str]:
        before = watcher.baseline.get(self.nodeid)
        path = watcher.options.baseline
        if before is None or path is None or count <= before.queries:
            return []
        headline = (
            f"{self.name} ran {count} statements, baseline {before.queries} "
            f"({count - before.queries} more; {display(path)})"
        )
        return [headline, *(f"  {line}" for line in baseline.grown(before, count, shapes))]


def _shapes(scope: Scope) -> dict[str, int]:
    return dict(Counter(shorten(r.shape.sql, SQL_WIDTH) for r in scope.records))


@dataclass
class Watcher:
    """The plugin in one session: the options, the baseline read, a profiler made on first use."""

    options: Options
    baseline: dict[str, baseline.Entry] = field(default_factory=dict)
    _profiler: Profiler | None = None
    _instrumented: bool = False

    @property
    def profiler(self) -> Profiler:
        if self._profiler is None:
            # Findings are the plugin's to report; the thresholds are the tests' own.
            self._profiler = Profiler(
                n_plus_one_threshold=self.options.threshold,
                log_findings=False,
                explain=False,
                opentelemetry=False,
            )
        return self._profiler

    def instrument(self) -> None:
        if not self._instrumented:
            self.profiler.instrument()
            self._instrumented = True

    def uninstrument(self) -> None:
        """Take the listeners off while a test that asked for nothing runs: it pays nothing."""
        if self._instrumented:
            self.profiler.uninstrument()
            self._instrumented = False

    def wants(self, item: pytest.Item) -> bool:
        return (
            self.options.watch_every_test
            or item.get_closest_marker("query_budget") is not None
            or not FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))
        )


WATCHER = pytest.StashKey[Watcher]()
RUN = pytest.StashKey[TestRun]()
IN_CALL = pytest.StashKey[bool]()  # the test body is running


def watcher_of(config: pytest.Config) -> Watcher:
    return config.stash[WATCHER]


def run_of(item: pytest.Item) -> TestRun:
    """The test's run; made now for a fixture asked for late (``request.getfixturevalue``)."""
    run = item.stash.get(RUN, None)
    if run is None:
        watcher = watcher_of(item.config)
        watcher.instrument()
        run = item.stash[RUN] = TestRun(item, Budget(), watcher)
    return run
