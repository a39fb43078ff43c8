"""Test helpers that need no pytest: the scaling check.

>>> from queryprof.testing import assert_constant_queries
>>> assert_constant_queries(seed_authors, lambda: client.get("/authors"))
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from itertools import pairwise
from typing import Any, overload

from queryprof._diagnosis import ShapeKey, plural, shape_counts, shape_lines, sql_of
from queryprof._profiler import Profiler
from queryprof.scope import Scope

__all__ = ["assert_constant_queries"]


@overload
def assert_constant_queries(  # type: ignore[overload-overlap]
    populate: Callable[[int], Awaitable[object]],
    action: Callable[[], object],
    *,
    scales: Sequence[int] = ...,
) -> Coroutine[Any, Any, dict[int, int]]: ...


@overload
def assert_constant_queries(  # type: ignore[overload-overlap]
    populate: Callable[[int], object],
    action: Callable[[], Awaitable[object]],
    *,
    scales: Sequence[int] = ...,
) -> Coroutine[Any, Any, dict[int, int]]: ...


@overload
def assert_constant_queries(
    populate: Callable[[int], object],
    action: Callable[[], object],
    *,
    scales: Sequence[int] = ...,
) -> dict[int, int]: ...


def assert_constant_queries(
    populate: Callable[[int], object],
    action: Callable[[], object],
    *,
    scales: Sequence[int] = (2, 5),
) -> dict[int, int] | Coroutine[Any, Any, dict[int, int]]:
    """Fail when ``action`` runs more statements as the data grows: an N+1, without a number.

    For each scale, ``populate(scale)`` makes the data hold that many items (not measured),
    then ``action()`` runs and its statements are counted, wherever they run (an app behind
    ``TestClient`` runs in a thread of its own). A count that grows with the scale raises
    ``AssertionError`` naming the statements that grew, their call sites and the fix.
    Returns ``{scale: count}``.

    When ``populate`` or ``action`` is an ``async def`` function, it returns a coroutine::

        await assert_constant_queries(seed, lambda_returning_nothing_async)
    """
    checked = _check_scales(scales)
    if _is_async(populate) or _is_async(action):
        return _measure_async(populate, action, checked)
    runs = []
    with _profiler() as profiler:
        for scale in checked:
            _call_sync(populate, scale)
            with _scope(profiler, scale) as scope:
                _call_sync(action)
            runs.append(scope)
    return _judge(action, checked, runs)


async def _measure_async(
    populate: Callable[..., object], action: Callable[[], object], scales: tuple[int, ...]
) -> dict[int, int]:
    runs = []
    with _profiler() as profiler:
        for scale in scales:
            await _call_async(populate, scale)
            with _scope(profiler, scale) as scope:
                await _call_async(action)
            runs.append(scope)
    return _judge(action, scales, runs)


def _judge(
    action: Callable[[], object], scales: tuple[int, ...], runs: list[Scope]
) -> dict[int, int]:
    __tracebackhide__ = True
    counts = {scale: scope.query_count for scale, scope in zip(scales, runs, strict=True)}
    values = list(counts.values())
    if all(later <= earlier for earlier, later in pairwise(values)):
        return counts
    raise AssertionError("\n".join(_message(action, counts, runs)))


def _message(action: Callable[[], object], counts: dict[int, int], runs: list[Scope]) -> list[str]:
    at = ", ".join(f"{plural(c, 'statement')} at scale {s}" for s, c in counts.items())
    name = getattr(action, "__qualname__", "")
    of = f" in {name}()" if name and "<lambda>" not in name else ""
    per_scale = [shape_counts(scope.records) for scope in runs]
    grew: dict[ShapeKey, list[int]] = {}
    for key in dict.fromkeys(k for c in per_scale for k in c):
        series = [c.get(key, 0) for c in per_scale]
        if series[-1] > series[0]:
            grew[key] = series
    sql = {k: v for scope in runs for k, v in sql_of(scope.records).items()}
    largest = runs[-1].findings
    notes = [f for f in largest if (f.fingerprint, f.location) in grew]
    lines = [f"the statement count grows with the data{of}: {at}"]
    lines += shape_lines(grew, sql, notes)
    return lines


@contextmanager
def _profiler() -> Iterator[Profiler]:
    # Its own listeners, counted and shared with any other profiler: works with or without
    # the pytest plugin, and leaves the process as it found it.
    profiler = Profiler(
        n_plus_one_threshold=2, log_findings=False, explain=False, opentelemetry=False
    )
    profiler.instrument()
    try:
        yield profiler
    finally:
        profiler.uninstrument()


def _scope(profiler: Profiler, scale: int) -> Scope:
    return profiler.scope(f"assert_constant_queries at scale {scale}", process_wide=True)


def _check_scales(scales: Sequence[int]) -> tuple[int, ...]:
    checked = tuple(scales)
    if len(checked) < 2 or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in checked
    ):
        raise ValueError(f"scales must be two or more whole numbers, not {scales!r}")
    if any(later <= earlier for earlier, later in pairwise(checked)):
        raise ValueError(f"scales must grow, smallest first, not {scales!r}")
    return checked


def _is_async(function: Callable[..., object]) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - a callable object's async __call__
    )


def _call_sync(function: Callable[..., object], *args: object) -> None:
    result = function(*args)
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited: say so here, not in a RuntimeWarning later
        raise TypeError(
            f"{function!r} returned an awaitable: make it an async def function and "
            "await assert_constant_queries(...)"
        )


async def _call_async(function: Callable[..., object], *args: object) -> None:
    result = function(*args)
    if inspect.isawaitable(result):
        await result
