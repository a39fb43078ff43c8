"""The plugin's fixtures: ``query_budget`` (a budget for a block) and ``queryprof_scope``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType

import pytest

from queryprof._diagnosis import display, scope_lines
from queryprof._pytest_budget import check_count, verdict
from queryprof._pytest_session import IN_CALL, Watcher, run_of, watcher_of
from queryprof.scope import Scope


@pytest.fixture
def queryprof_scope(request: pytest.FixtureRequest) -> Scope:
    """The test's own :class:`~queryprof.Scope`: every statement the test body runs.

    ``queryprof_scope.query_count``, ``.queries`` and, once the test is over, ``.findings``.
    Statements run while fixtures are set up are not in it (see ``include_setup``).
    """
    assert isinstance(request.node, pytest.Item)
    run = run_of(request.node)
    if request.node.stash.get(IN_CALL, False):
        run.open()  # asked for from inside the test body: count from here on
    return run.scope


class BudgetBlock:
    """``with query_budget(3):`` (or ``async with``): the block may run at most 3 statements."""

    def __init__(self, watcher: Watcher, test: str, n: int, exact: bool, where: str) -> None:
        self._watcher = watcher
        self._test = test
        self.n = n
        self.exact = exact
        self.where = where
        self.scope = watcher.profiler.scope(f"{test} {where}", kind="test", process_wide=True)

    def __enter__(self) -> Scope:
        if self.scope.closed:
            raise RuntimeError("a query_budget(...) block runs once: call query_budget again")
        self._watcher.instrument()
        return self.scope.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.scope.close()
        if exc_type is not None:
            return  # the block's own error comes first
        broken = verdict(self.scope.query_count, self.n, self.exact)
        if broken:
            headline = f"{self._test} {broken} in the block at {self.where}"
            pytest.fail("\n".join([headline, *scope_lines(self.scope)]), pytrace=False)

    async def __aenter__(self) -> Scope:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


@pytest.fixture
def query_budget(request: pytest.FixtureRequest) -> Callable[..., BudgetBlock]:
    """A budget for a block of the test: ``with query_budget(3): client.get("/authors")``.

    ``query_budget(n, exact=False)``; works as ``with`` and ``async with`` and yields the
    block's :class:`~queryprof.Scope`. Over budget, the test fails there, with what ran.
    """
    watcher = watcher_of(request.config)
    test = request.node.name

    def block(n: int, *, exact: bool = False) -> BudgetBlock:
        check_count("n", n)
        if not isinstance(exact, bool):
            raise TypeError(f"exact must be True or False, not {exact!r}")
        caller = sys._getframe(1)
        where = f"{display(caller.f_code.co_filename)}:{caller.f_lineno}"
        return BudgetBlock(watcher, test, n, exact, where)

    return block
