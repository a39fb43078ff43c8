"""The EXPLAIN worker: plans for slow queries, obtained after the request, never during it.

When a scope closes, each slow-query finding asks for the plan of its statement shape:

* **One plan per shape per window.** A plan obtained in the last ``explain_window`` seconds
  (or one still being obtained) is reused, so a slow endpoint hit a thousand times a minute
  costs one EXPLAIN per window. ``explain_sample_rate`` < 1 explains only that share of the
  remaining occurrences, and a scope left out by ``sample_rate`` gets no EXPLAIN at all.
* **A bounded queue.** At most ``explain_concurrency`` EXPLAINs run at once, at most
  ``explain_queue_size`` wait; beyond that the work is dropped and counted.
* **Off the request path.** For an async engine the EXPLAIN is a task on the event loop the
  scope closed on, with an async connection from the same engine; for a sync engine it runs
  in a worker thread. Either way in an empty ``contextvars.Context``: outside every scope.
* **Bounded.** The EXPLAIN has ``explain_timeout`` on the server; the client gives up a
  little later, a job waits in the queue at most that long, and a watchdog resolves any job
  still running after that, so every finding gets its plan or an error in bounded time.
  Failures of any kind become ``Plan(status="error")`` and a count, never an exception.

The slow-query findings of a scope are logged when their plan is in: :meth:`hold_back` wraps
the logging callback so that the other findings are logged at once and these later.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import random
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Final

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import greenlet_spawn

from queryprof._guard import internal_error
from queryprof._settings import Settings
from queryprof.explain import _sql, mysql, postgresql, sqlite
from queryprof.explain._driver import Request
from queryprof.explain.redact import describe_error
from queryprof.findings import Finding, Plan, PlanStatus
from queryprof.scope import Record, Scope

ScopeCallback = Callable[[Scope], None]

GRACE: Final = 1.0
"""Seconds the client waits past the server-side timeout before it gives up on an EXPLAIN."""
MAX_SHAPES: Final = 1_000
"""Plans remembered for the dedup window (the oldest go first)."""

_OUTCOMES: Final = (
    *("explained", "failed", "timed_out", "reused", "not_sampled", "dropped", "unavailable"),
)
RUNNERS: Final[dict[str, Callable[[Connection, Request], Plan]]] = {
    "postgresql": postgresql.explain,
    "mysql": mysql.explain,
    "mariadb": mysql.explain,
    "sqlite": sqlite.explain,
}


def explain_on(connection: Connection, request: Request) -> Plan:
    """The plan of ``request`` on ``connection`` (sync; under ``run_sync`` for async)."""
    return RUNNERS[connection.dialect.name](connection, request)


@dataclass(eq=False)
class _Job:
    request: Request
    engine: Engine
    pool: Any  # the engine's pool when the statement ran: another one means it was disposed
    loop: asyncio.AbstractEventLoop | None
    queued_at: float = field(default_factory=time.monotonic)
    result: Future[Plan] = field(default_factory=Future)
    released: bool = False
    dbapi: Any = None  # the sync job's DBAPI connection, to cancel it from the watchdog


@dataclass(eq=False)
class _Held:
    """A closed scope whose slow-query findings wait for their plans."""

    scope: Scope
    findings: dict[int, Finding] = field(default_factory=dict)  # index -> finding held back
    reported_to: list[ScopeCallback] = field(default_factory=list)  # callbacks awaiting plans


class Explainer:
    """Obtains and attaches the plans of a profiler's slow queries (``profiler.explainer``)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._plans: dict[tuple[str, str], tuple[float, Future[Plan]]] = {}
        self._queue: deque[_Job] = deque()
        self._running = 0
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: dict[Scope, _Held] = {}
        self._outstanding: set[Future[None]] = set()
        self._counts: Counter[str] = Counter()
        self._queue_peak = 0
        self._names: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"<Explainer running={self._running} queued={len(self._queue)}>"

    def stats(self) -> dict[str, int]:
        """Counts since start: ``explained``, ``failed``, ``timed_out``, ``reused`` (the
        window's plan), ``not_sampled``, ``dropped`` (queue full), ``unavailable``; and the
        queue now: ``running``, ``queued``, ``queue_peak``."""
        with self._lock:
            counts = {name: self._counts[name] for name in _OUTCOMES}
            counts.update(
                running=self._running, queued=len(self._queue), queue_peak=self._queue_peak
            )
            return counts

    # -- scopes -----------------------------------------------------------------------------

    def submit(self, scope: Scope) -> None:
        """Ask for the plan of each slow-query finding of a scope that just closed."""
        slow = [(i, f) for i, f in enumerate(scope.findings) if f.kind == "slow_query"]
        if not slow:
            return
        sources = _slowest_sources(scope.records)
        if not scope.sampled:
            self._skip_unsampled(scope, slow, sources)
            return
        loop = _running_loop()
        held = _Held(scope)
        pending: list[tuple[int, Future[Plan]]] = []
        for i, finding in slow:
            plan = self._plan(sources.get(finding.fingerprint), finding.fingerprint, loop)
            if plan.done():
                scope.findings[i] = replace(finding, plan=plan.result())
            else:
                held.findings[i] = finding
                pending.append((i, plan))
        if not pending:
            return
        with self._lock:
            self._held[scope] = held
        for i, plan in pending:
            marker: Future[None] = Future()
            with self._lock:
                self._outstanding.add(marker)
            plan.add_done_callback(partial(self._plan_in, held, i, marker))

    def _skip_unsampled(
        self, scope: Scope, slow: list[tuple[int, Finding]], sources: dict[str, Record]
    ) -> None:
        """A scope outside the ``sample_rate`` share: its slow queries say why no plan."""
        reason = f"the scope was not sampled (sample_rate={self._settings.sample_rate})"
        for i, finding in slow:
            record = sources.get(finding.fingerprint)
            dialect = record.source[2].dialect.name if record and record.source else "?"
            scope.findings[i] = replace(finding, plan=Plan(dialect, "skipped", error=reason))
        with self._lock:
            self._counts["not_sampled"] += len(slow)

    def hold_back(self, log: ScopeCallback) -> ScopeCallback:
        """``log`` for the findings that are ready; held slow-query findings come later."""

        def log_ready(scope: Scope) -> None:
            with self._lock:
                held = self._held.get(scope)
                waiting = set(held.findings) if held is not None else set()
                if held is not None:
                    held.reported_to.append(log)
            if not waiting:
                log(scope)
                return
            ready = [f for i, f in enumerate(scope.findings) if i not in waiting]
            if ready:
                log(_view(scope, ready))

        return log_ready

    def _plan_in(self, held: _Held, index: int, marker: Future[None], plan: Future[Plan]) -> None:
        try:
            scope, finding = held.scope, held.findings[index]
            done = replace(finding, plan=plan.result())
            if index < len(scope.findings) and scope.findings[index] is finding:
                scope.findings[index] = done
            with self._lock:
                del held.findings[index]
                callbacks = list(held.reported_to)
                if not held.findings:
                    self._held.pop(scope, None)
            for log in callbacks:
                try:
                    log(_view(scope, [done]))
                except Exception as exc:
                    internal_error("report", exc)
        except Exception as exc:
            internal_error("explain", exc)
        finally:
            with self._lock:
                self._outstanding.discard(marker)
            marker.set_result(None)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every pending plan is in and its finding logged; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                markers = list(self._outstanding)
            if not markers:
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            await asyncio.wait([asyncio.wrap_future(m) for m in markers], timeout=remaining)

    def flush_sync(self, timeout: float | None = None) -> bool:
        """:meth:`flush` for sync code. Not on an event loop whose async engine is explained:
        the plans would wait for the loop this call blocks."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                markers = list(self._outstanding)
            if not markers:
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            wait_futures(markers, timeout=remaining)

    # -- one plan per shape per window ------------------------------------------------------

    def _plan(
        self, record: Record | None, fingerprint: str, loop: asyncio.AbstractEventLoop | None
    ) -> Future[Plan]:
        if record is None or record.source is None:
            return self._settled("unavailable", "?", "the statement's text was not kept")
        statement, parameters, engine = record.source
        now = time.monotonic()
        with self._lock:
            key = (self._name(engine), fingerprint)
            known = self._plans.get(key)
            if known is not None and known[0] > now:
                self._counts["reused"] += 1
                return known[1]
        reason = _unavailable(statement, engine, loop)
        if reason is not None:
            plan = self._settled("unavailable", engine.dialect.name, reason)
            with self._lock:
                self._remember(key, plan, now)
            return plan
        settings = self._settings
        request = Request(
            statement=statement,
            parameters=parameters,
            executemany=record.executemany,
            analyze=settings.explain_analyze and _sql.read_only_select(statement),
            timeout=settings.explain_timeout,
            capture_parameters=settings.capture_parameters,
        )
        job = _Job(request, engine, engine.pool, loop if engine.dialect.is_async else None)
        with self._lock:
            if random.random() >= settings.explain_sample_rate:
                self._counts["not_sampled"] += 1
                reason = f"not sampled (explain_sample_rate={settings.explain_sample_rate})"
                return _settled_future(Plan(engine.dialect.name, "skipped", error=reason))
            start = self._running < settings.explain_concurrency
            if start:
                self._running += 1
            elif len(self._queue) < settings.explain_queue_size:
                self._queue.append(job)
                self._queue_peak = max(self._queue_peak, len(self._queue))
            else:
                self._counts["dropped"] += 1
                size = settings.explain_queue_size
                reason = f"the EXPLAIN queue is full (explain_queue_size={size})"
                return _settled_future(Plan(engine.dialect.name, "skipped", error=reason))
            self._remember(key, job.result, now)
        if start:
            self._start(job)
        return job.result

    def _name(self, engine: Engine) -> str:
        """The engine's URL without its password (under the lock): engines to one database
        share their plans."""
        name = self._names.get(engine)
        if name is None:
            name = self._names[engine] = engine.url.render_as_string(hide_password=True)
        return name

    def _remember(self, key: tuple[str, str], plan: Future[Plan], now: float) -> None:
        """Keep a plan for the window (under the lock); the oldest go beyond MAX_SHAPES."""
        self._plans.pop(key, None)
        self._plans[key] = (now + self._settings.explain_window, plan)
        if len(self._plans) > MAX_SHAPES:
            for stale in [k for k, (until, _) in self._plans.items() if until <= now]:
                del self._plans[stale]
            while len(self._plans) > MAX_SHAPES:
                del self._plans[next(iter(self._plans))]

    def _settled(self, status: PlanStatus, dialect: str, reason: str) -> Future[Plan]:
        with self._lock:
            self._counts[status] += 1
        return _settled_future(Plan(dialect, status, error=reason))

    # -- running jobs -----------------------------------------------------------------------

    def _start(self, job: _Job) -> None:
        """Run a job that holds a slot: on its event loop, or in a worker thread."""
        watchdog = threading.Timer(job.request.timeout + 2 * GRACE, self._abandon, (job,))
        watchdog.daemon = True
        job.result.add_done_callback(lambda _: watchdog.cancel())
        watchdog.start()
        try:
            if job.loop is not None:
                job.loop.call_soon_threadsafe(self._spawn, job)
            else:
                with self._lock:
                    if self._executor is None:
                        self._executor = ThreadPoolExecutor(
                            self._settings.explain_concurrency, "queryprof-explain"
                        )
                    executor = self._executor
                executor.submit(contextvars.Context().run, self._run_sync, job)
        except RuntimeError as exc:  # the loop is closed, or the interpreter is exiting
            self._finish(job, self._failure(job, exc))

    def _spawn(self, job: _Job) -> None:
        assert job.loop is not None
        task = job.loop.create_task(self._run_async(job), context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_async(self, job: _Job) -> None:
        try:
            plan = await self._explain_async(job)
        except asyncio.CancelledError:
            self._finish(job, _error(job, "cancelled: the event loop is shutting down"))
            raise
        self._finish(job, plan)

    async def _explain_async(self, job: _Job) -> Plan:
        skipped = self._expired(job)
        if skipped is not None:
            return skipped
        request, started = job.request, time.perf_counter()
        connection: AsyncConnection | None = None
        clean = False
        try:
            async with asyncio.timeout(request.timeout + GRACE):
                connection = await AsyncEngine(job.engine).connect()
                plan = await connection.run_sync(explain_on, request)
            clean = True
            return replace(plan, duration=time.perf_counter() - started)
        except Exception as exc:
            return self._failure(job, exc, started)
        finally:  # also when cancelled: the connection must not outlive the event loop
            if connection is not None:
                try:
                    if self._discard(job, clean):
                        await connection.invalidate()
                    await connection.close()
                    if job.engine.pool is not job.pool:
                        await greenlet_spawn(job.pool.dispose)
                except Exception as exc:
                    internal_error("explain release", exc)

    def _run_sync(self, job: _Job) -> None:
        self._finish(job, self._explain_sync(job))

    def _explain_sync(self, job: _Job) -> Plan:
        skipped = self._expired(job)
        if skipped is not None:
            return skipped
        request, started = job.request, time.perf_counter()
        try:
            with job.engine.connect() as connection:
                job.dbapi = connection.connection.dbapi_connection
                clean = False
                try:
                    plan = explain_on(connection, request)
                    clean = True
                finally:
                    if self._discard(job, clean):
                        connection.invalidate()
            return replace(plan, duration=time.perf_counter() - started)
        except Exception as exc:
            return self._failure(job, exc, started)
        finally:
            job.dbapi = None
            if job.engine.pool is not job.pool:
                job.pool.dispose()  # see _discard

    def _discard(self, job: _Job, clean: bool) -> bool:
        """Whether the EXPLAIN's connection must be closed rather than go back to the pool."""
        if job.engine.pool is not job.pool:
            # The engine was disposed meanwhile: its old pool is going away. (A dispose can
            # also start while the connection goes back, so the caller disposes the old pool
            # again afterwards: nothing is left in it to be garbage-collected unclosed.)
            return True
        if job.engine.dialect.name == "sqlite":
            return False  # never close an in-memory database's one shared connection
        # After a failure its state is unknown; after an ANALYZE the statement ran in it.
        return not clean or job.request.analyze

    def _expired(self, job: _Job) -> Plan | None:
        """Why a job that got its slot does not run after all, if it does not."""
        if job.engine.pool is not job.pool:
            return _error(job, "the engine was disposed before the EXPLAIN could run")
        if time.monotonic() - job.queued_at <= job.request.timeout:
            return None
        timeout = job.request.timeout
        return _error(job, f"timed out after {timeout:g} s waiting in the EXPLAIN queue")

    def _failure(self, job: _Job, exc: BaseException, started: float | None = None) -> Plan:
        elapsed = time.perf_counter() - started if started is not None else 0.0
        if isinstance(exc, TimeoutError) or _server_timeout(exc):
            message = f"timed out after {job.request.timeout:g} s"
        else:
            message = describe_error(exc, capture_parameters=job.request.capture_parameters)
        return replace(_error(job, message), duration=elapsed)

    def _abandon(self, job: _Job) -> None:
        """The watchdog: a job still running well past its timeout is given up on."""
        if job.result.done():
            return
        cancel = getattr(job.dbapi, "cancel", None) or getattr(job.dbapi, "interrupt", None)
        if cancel is not None:
            try:
                cancel()
            except Exception as exc:
                internal_error("explain cancel", exc)
        timeout = job.request.timeout
        self._finish(job, _error(job, f"timed out after {timeout:g} s (no answer)"))

    def _finish(self, job: _Job, plan: Plan) -> None:
        """Settle a job (once) and hand its slot to the next job in the queue."""
        with self._lock:
            if job.released:
                return
            job.released = True
            outcome = "explained" if plan.status == "ok" else "failed"
            if plan.error and plan.error.startswith("timed out"):
                outcome = "timed_out"
            self._counts[outcome] += 1
            following = self._queue.popleft() if self._queue else None
            if following is None:
                self._running -= 1
        try:
            job.result.set_result(plan)
        except Exception as exc:
            internal_error("explain result", exc)
        if following is not None:
            self._start(following)


def _dialect(job: _Job) -> str:
    return str(job.engine.dialect.name)


def _error(job: _Job, message: str) -> Plan:
    return Plan(_dialect(job), "error", error=message)


def _settled_future(plan: Plan) -> Future[Plan]:
    future: Future[Plan] = Future()
    future.set_result(plan)
    return future


def _server_timeout(exc: BaseException) -> bool:
    """The server cut the EXPLAIN: statement_timeout (57014), max_statement_time (1969)."""
    original = getattr(exc, "orig", None) or exc
    code = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if code == "57014":
        return True
    args: tuple[Any, ...] = tuple(getattr(original, "args", ()))
    return bool(args) and args[0] in (1969, 3024)


def _unavailable(
    statement: str, engine: Engine, loop: asyncio.AbstractEventLoop | None
) -> str | None:
    """Why this statement gets no EXPLAIN at all, or None."""
    if engine.dialect.name not in RUNNERS:
        return "EXPLAIN is run on PostgreSQL, MySQL/MariaDB and SQLite only"
    reason = _sql.not_explainable(statement)
    if reason is None and engine.dialect.is_async and loop is None:
        reason = "the scope closed outside the event loop of its async engine"
    return reason


def _slowest_sources(records: list[Record]) -> dict[str, Record]:
    """The slowest record of each shape that kept its text and parameters."""
    slowest: dict[str, Record] = {}
    for r in records:
        if r.source is None:
            continue
        known = slowest.get(r.shape.fingerprint)
        if known is None or r.duration > known.duration:
            slowest[r.shape.fingerprint] = r
    return slowest


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _view(scope: Scope, findings: list[Finding]) -> Scope:
    """The scope as a logging callback sees it, with only these findings."""
    view = copy.copy(scope)
    view.findings = findings
    return view
