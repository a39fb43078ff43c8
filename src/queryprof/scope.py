"""Scopes: one unit of work (a request, a test, a job) and the statements it ran.

The open scopes live in one ContextVar as a tuple, innermost last. A ``Scope`` is a mutable
object shared by reference, so tasks started inside it (``asyncio.gather``, ``create_task``),
sync endpoints run in the threadpool (which copies the context) and background tasks all
report into the scope that spawned them. Closing a scope freezes it: a task that outlives
it can no longer change its result.

The per-statement path only appends one tuple to a bounded list (atomic under the GIL, so a
scope shared by threads stays exact); everything else is computed when the scope closes.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from queryprof.callsite import CallSite, describe
from queryprof.findings import Finding, Query, Transaction

if TYPE_CHECKING:
    from queryprof.fingerprint import Shape

# (open scopes innermost last, the reason of an enclosing ``allow()`` block or None)
StackFrame = tuple[tuple["Scope", ...], str | None]

_stack: ContextVar[StackFrame | None] = ContextVar("queryprof_scopes", default=None)

# Scopes that see every statement of the process, whatever the context (the pytest plugin's
# test scope: the app under test may run in another thread or event loop).
process_scopes: tuple[Scope, ...] = ()
_process_lock = threading.Lock()


class Record(NamedTuple):
    """One statement, as the per-statement path stores it (no formatting, no lookups)."""

    shape: Shape
    start: float
    duration: float
    rowcount: int
    params_key: int | None
    compiled: Any
    lazy: bool
    site: CallSite | None
    txn: Any
    executemany: bool
    error: str | None
    allowed: str | None
    parameters: Any
    source: tuple[str, Any, Any] | None  # slow statements only: (text, parameters, engine)


class TxnTrack:
    """What the transaction events told us about one connection-level transaction."""

    __slots__ = ("end", "info", "outcome", "pool_reset")

    def __init__(self, info: Any) -> None:
        self.info = info
        self.end: float | None = None
        self.outcome: str | None = None
        self.pool_reset = False


def current_scope() -> Scope | None:
    """The innermost open scope of the current context, or None outside any scope."""
    frame = _stack.get()
    if frame is None:
        return None
    return frame[0][-1] if frame[0] else None


def current_scopes() -> tuple[Scope, ...]:
    """Every scope a statement run here counts toward: the context's and the process-wide."""
    frame = _stack.get()
    scopes = frame[0] if frame is not None else ()
    if process_scopes:
        scopes = scopes + tuple(s for s in process_scopes if s not in scopes)
    return scopes


class Scope:
    """One unit of work and the statements it sent to the database.

    Open one with ``profiler.scope("name")`` (``with`` or ``async with``); the middleware
    opens one per HTTP request, named ``"GET /authors/{author_id}"``. While open,
    ``query_count`` and ``db_time`` are live; ``findings`` and ``transactions`` are filled
    when the scope closes.

    ``sampled`` is drawn when the scope opens (``sample_rate``, the profiler's setting): an
    unsampled scope still counts and times every statement and gets every finding, but its
    statements' call sites (``location``) are not looked up and its slow queries get no
    EXPLAIN plan, unless an enclosing open scope is sampled.
    """

    def __init__(
        self,
        name: str,
        *,
        kind: str = "custom",
        max_queries: int = 10_000,
        capture_parameters: bool = False,
        on_close: Callable[[Scope], None] | None = None,
        process_wide: bool = False,
        sample_rate: float = 1.0,
    ) -> None:
        self.name = name
        self.kind = kind
        self.findings: list[Finding] = []
        self.transactions: list[Transaction] = []
        self.started_at = time.time()
        self.duration: float | None = None
        self.route: str | None = None
        self.method: str | None = None
        self.attributes: dict[str, Any] = {}
        self.raw: list[tuple[Any, ...]] = []  # Record fields, as the per-statement path made them
        self.max_queries = max_queries
        self._records: list[Record] | None = None
        self._dropped = 0
        self._dropped_time = 0.0
        self._lock = threading.Lock()
        self._closed = False
        self._start = time.perf_counter()
        self._capture_parameters = capture_parameters
        self._on_close = on_close
        self._process_wide = process_wide
        self._token: Token[StackFrame | None] | None = None
        self.sample_rate = sample_rate
        # Whether this scope's call sites and EXPLAIN plans are captured (drawn in open()).
        self.sampled = True
        self.txns: dict[Any, TxnTrack] = {}
        self.last_txn: Any = None
        self.session_txns: dict[Any, list[Any]] = {}

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Scope {self.name!r} {state} queries={self.query_count}>"

    # -- live numbers -------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def query_count(self) -> int:
        """Statements sent to the database; transaction control statements excluded."""
        return len(self.raw) + self._dropped

    @property
    def db_time(self) -> float:
        """Seconds spent in those statements."""
        total: float = sum(r[2] for r in self.raw)
        return total + self._dropped_time

    @property
    def dropped_queries(self) -> int:
        """Statements counted but not recorded because the scope reached its record cap."""
        return self._dropped

    @property
    def records(self) -> list[Record]:
        """The records (at most ``max_queries_per_scope``), for detectors and exporters."""
        if self._records is not None:
            return self._records
        records = [Record._make(r) for r in self.raw]
        if self._closed:
            self._records = records
        return records

    @property
    def queries(self) -> list[Query]:
        """The recorded statements (at most ``max_queries_per_scope``), oldest first."""
        return [self._query(r) for r in self.records]

    def _query(self, r: Record) -> Query:
        from queryprof.orm import relationship_of

        return Query(
            sql=r.shape.sql,
            fingerprint=r.shape.fingerprint,
            operation=r.shape.operation,
            started=r.start - self._start,
            duration=r.duration,
            rowcount=r.rowcount,
            executemany=r.executemany,
            location=describe(r.site),
            relationship=relationship_of(r.compiled) if r.lazy else None,
            error=r.error,
            parameters=r.parameters if self._capture_parameters else None,
        )

    # -- the per-statement path ---------------------------------------------------------

    def drop(self, duration: float) -> None:
        """Count a statement the record cap kept out (capture.py appends to ``raw`` itself)."""
        with self._lock:
            self._dropped += 1
            self._dropped_time += duration

    # -- opening and closing --------------------------------------------------------------

    def open(self) -> Scope:
        self.sampled = self.sample_rate >= 1.0 or random.random() < self.sample_rate
        self._start = time.perf_counter()
        self.started_at = time.time()
        if self._process_wide:
            global process_scopes
            with _process_lock:
                process_scopes = (*process_scopes, self)
            return self
        frame = _stack.get()
        if frame is None:
            self._token = _stack.set(((self,), None))
        else:
            self._token = _stack.set(((*frame[0], self), frame[1]))
        return self

    def close(self) -> None:
        """Freeze the scope and run the analysis; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.duration = time.perf_counter() - self._start
        self._leave()
        if self._on_close is not None:
            self._on_close(self)

    def _leave(self) -> None:
        if self._process_wide:
            global process_scopes
            with _process_lock:
                process_scopes = tuple(s for s in process_scopes if s is not self)
            return
        token, self._token = self._token, None
        if token is None:
            return
        try:
            _stack.reset(token)
        except ValueError:
            # Closed from another context (e.g. a finalizer): drop this scope from that one.
            frame = _stack.get()
            if frame is not None and self in frame[0]:
                rest = tuple(s for s in frame[0] if s is not self)
                _stack.set((rest, frame[1]) if rest or frame[1] else None)

    def __enter__(self) -> Scope:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Scope:
        return self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def start(self) -> float:
        """``time.perf_counter()`` when the scope opened."""
        return self._start


class allow:
    """Silence findings for the statements run inside this block.

    >>> with queryprof.allow("admin export walks every row on purpose"):
    ...     export_everything()

    The statements still count toward ``query_count`` and budgets; they just make no finding.
    """

    def __init__(self, reason: str) -> None:
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(f"allow() needs a reason, got {reason!r}")
        self.reason = reason
        self._token: Token[StackFrame | None] | None = None

    def __enter__(self) -> allow:
        frame = _stack.get()
        self._token = _stack.set(((frame[0] if frame else ()), self.reason))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _stack.reset(self._token)
            self._token = None

    async def __aenter__(self) -> allow:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()
