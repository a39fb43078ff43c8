"""The end of a run: every test's result collected, the baseline written once, the summary.

Results travel on the test reports, so under pytest-xdist the controller sees the results of
every worker, merges them and alone writes the baseline file.
"""

from __future__ import annotations

import pytest

from queryprof import _pytest_baseline as baseline
from queryprof._diagnosis import display, plural
from queryprof._pytest_session import Result, Watcher

TOP = 10


class RunReport:
    """A plugin object, one per session: ``pytest_runtest_logreport`` needs the session's state."""

    def __init__(self, config: pytest.Config, watcher: Watcher) -> None:
        self.config = config
        self.watcher = watcher
        self.results: dict[str, tuple[Result, bool]] = {}  # nodeid -> (result, passed)
        self.outcome: baseline.Outcome | None = None

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, "queryprof", None)
        if report.when == "call" and isinstance(data, dict):
            self.results[report.nodeid] = (Result.from_json(data), report.passed)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        path = self.watcher.options.baseline
        if path is None or self.is_worker:
            return
        ran = {
            nodeid: baseline.Entry(result.queries, result.shapes or {})
            for nodeid, (result, passed) in self.results.items()
            if passed
        }
        update = self.watcher.options.update
        self.outcome = baseline.merge(self.watcher.baseline, ran, update=update)
        if self.outcome.write:
            baseline.dump(path, self.outcome.entries)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.is_worker:
            return
        lines = [*self._top(), *self._n_plus_one(), *self._baseline()]
        if lines:
            terminalreporter.write_sep("=", "queryprof")
            for line in lines:
                terminalreporter.write_line(line)

    def _top(self) -> list[str]:
        if not self.watcher.options.report or not self.results:
            return []
        tests = plural(len(self.results), "test")
        ran = [(nodeid, result) for nodeid, (result, _) in self.results.items() if result.queries]
        if not ran:
            return [f"No SQL statement in {tests}"]
        ranked = sorted(ran, key=lambda kv: -kv[1].queries)[:TOP]  # stable: first run first
        total = sum(result.queries for _, result in ran)
        width = len(str(ranked[0][1].queries))
        return [
            f"Most statements: {len(ranked)} of {tests} ({plural(total, 'statement')} in all)",
            *(f"  {result.queries:>{width}}  {nodeid}" for nodeid, result in ranked),
        ]

    def _n_plus_one(self) -> list[str]:
        report = self.watcher.options.report
        found = [
            (nodeid, result)
            for nodeid, (result, _) in sorted(self.results.items())
            if result.n_plus_one and (report or result.mode == "warn")
        ]
        if not found:
            return []
        lines = [f"N+1 in {plural(len(found), 'test')}:"]
        for nodeid, result in found:
            lines.append(f"  {nodeid}")
            lines.extend(f"    {text}" for text in result.n_plus_one)
        if not report:
            lines.append("(--queryprof-n-plus-one=fail makes them fail; =off hides this list)")
        return lines

    def _baseline(self) -> list[str]:
        path = self.watcher.options.baseline
        outcome = self.outcome
        if path is None or outcome is None:
            return []
        shown = display(path)
        lines = []
        if outcome.write:
            what = [f"{len(outcome.added)} added"] if outcome.added else []
            what += [f"{len(outcome.changed)} updated"] if outcome.changed else []
            lines.append(f"Baseline {shown} written: {', '.join(what)}")
        before = self.watcher.baseline
        more = [
            (nodeid, before[nodeid].queries, result.queries)
            for nodeid, (result, _) in sorted(self.results.items())
            if nodeid in before and result.queries > before[nodeid].queries
        ]
        if more and not self.watcher.options.update:
            lines.append(f"Baseline {shown}: {plural(len(more), 'test')} ran more statements:")
            lines.extend(f"  {nodeid}: {old} -> {new}" for nodeid, old, new in more)
        if outcome.fewer and not self.watcher.options.update:
            lines.append(
                f"Baseline {shown}: {plural(len(outcome.fewer), 'test')} ran fewer statements "
                "(--queryprof-baseline-update records it):"
            )
            lines.extend(f"  {nodeid}: {old} -> {new}" for nodeid, old, new in outcome.fewer)
        return lines
