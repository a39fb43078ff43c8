"""SQLAlchemy listeners that feed the open scopes. One set per process, shared by profilers.

Where we listen, and why (numbers from ``benchmarks/bench_capture.py``):

* Statements: the dialect's ``do_execute``, ``do_executemany`` and ``do_execute_no_params``
  events with ``retval=True``. The listener runs the statement itself, timing exactly the
  driver call. Any ``ConnectionEvents`` listener (``before_cursor_execute``, even ``begin``)
  would send every statement of the engine down SQLAlchemy's slower event path, which costs
  more than all of our work together.
* Transactions, per transaction and not per statement: the pool's ``reset`` and ``checkin``
  events (the connection going back to the pool ends its transaction, and ``reset`` says
  whether the pool had to roll it back) and the ORM Session's ``after_begin``,
  ``after_commit``, ``after_rollback`` and ``after_transaction_end`` (exact outcome for ORM
  transactions).
* Statements SQLAlchemy runs to set up a new connection (server version, schema) run outside
  any transaction; the application's never do, so those are skipped.

Because listeners are process-wide and deduplicated, a test's scope and an application's own
profiler see each statement once, and a statement outside every scope costs one ContextVar
read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from queryprof import scope as _scope
from queryprof import sqlcomment
from queryprof._guard import internal_error
from queryprof.callsite import capture_statement as _capture_site
from queryprof.fingerprint import shape_of
from queryprof.scope import Scope, TxnTrack, _stack, current_scopes

_perf_counter = time.perf_counter
_NO_PARAMS = object()
# In a scope's attributes (the middleware's request scope with sql_route_tags=True): a
# callable giving the route's comment, or None until the router has matched the request.
ROUTE_COMMENT = "queryprof.route_comment"

_lock = threading.RLock()
_installed: dict[Any, int] = {}  # listened target -> how many profilers asked for it
_session_refs = 0
capture_parameters = False  # keep parameter values: set while a profiler asks for them
slow_threshold = float("inf")  # the lowest slow_query_threshold of the live profilers
route_tags = False  # sql_route_tags: set while a profiler tags statements with their route
# While a profiler has OpenTelemetry on: export.otel.tag_query_span, which puts the
# fingerprint on opentelemetry-instrumentation-sqlalchemy's span of the statement.
tag_query_span: Callable[[Any, str], None] | None = None


def _params_key(parameters: Any) -> int | None:
    """A hash of the bound values: enough to see a repeat, without keeping the values."""
    try:
        kind = type(parameters)
        if kind is tuple:
            return hash(parameters)
        if kind is dict:
            return hash(tuple(parameters.values()))
        if parameters is _NO_PARAMS or parameters is None:
            return 0
        return hash(tuple(parameters))
    except TypeError:
        return _frozen_hash(parameters)


def _frozen_hash(value: Any, depth: int = 0) -> int | None:
    """Hash values with lists/dicts inside (arrays, JSON); None when it would cost too much."""
    if depth > 4:
        return None
    try:
        if isinstance(value, dict):
            items = [_frozen_hash(v, depth + 1) for v in list(value.values())[:1000]]
        elif isinstance(value, list | tuple | set | frozenset):
            items = [_frozen_hash(v, depth + 1) for v in list(value)[:1000]]
        else:
            return hash(value)
        if None in items:
            return None
        return hash((type(value).__name__, len(value), *items))
    except Exception:
        return None


def _profile(
    execute: Callable[..., Any],
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    frame: _scope.StackFrame | None,
    many: bool,
) -> bool:
    shape = shape_of(statement)
    if shape.is_control:
        return False  # BEGIN/COMMIT/SAVEPOINT...: not a query; SQLAlchemy runs it as usual
    sent = statement
    if route_tags or tag_query_span is not None:
        sent = _integrations(statement, shape, context, frame)
    start = _perf_counter()
    try:
        if parameters is _NO_PARAMS:
            execute(cursor, sent, context)
        else:
            execute(cursor, sent, parameters, context)
    except BaseException as exc:
        _record(
            shape, statement, start, cursor, parameters, context, frame, many, type(exc).__name__
        )
        raise
    _record(shape, statement, start, cursor, parameters, context, frame, many, None)
    return True


def _integrations(statement: str, shape: Any, context: Any, frame: _scope.StackFrame | None) -> str:
    """The opt-in extras: the route tag on the statement, the fingerprint on its span."""
    try:
        if tag_query_span is not None:
            tag_query_span(context, shape.fingerprint)
        if route_tags and frame is not None:
            for s in reversed(frame[0]):
                resolve = s.attributes.get(ROUTE_COMMENT)
                if resolve is not None:
                    comment = resolve()
                    return statement if comment is None else sqlcomment.tag(statement, comment)
    except Exception as exc:
        internal_error("statement integrations", exc)
    return statement


def _record(
    shape: Any,
    statement: str,
    start: float,
    cursor: Any,
    parameters: Any,
    context: Any,
    frame: _scope.StackFrame | None,
    many: bool,
    error: str | None,
) -> None:
    duration = _perf_counter() - start
    try:
        if frame is None:
            scopes: tuple[Scope, ...] = ()
            allowed = None
        else:
            scopes, allowed = frame
        if _scope.process_scopes:
            scopes = scopes + tuple(s for s in _scope.process_scopes if s not in scopes)
        if not scopes:
            return
        connection = context.root_connection
        txn = connection.get_transaction()
        if txn is None:
            # Only SQLAlchemy's own setup of a new connection (server version, schema,
            # settings) runs outside a transaction: not the application's statements.
            return
        # The call-site walk is the costliest part of a statement: only for sampled scopes.
        site = None
        for s in scopes:
            if s.sampled:
                site = _capture_site(shape.fingerprint, 4)  # 4: past _record, _profile, listener
                break
        if type(parameters) is tuple:
            try:
                params_key: int | None = hash(parameters)
            except TypeError:
                params_key = _params_key(parameters)
        else:
            params_key = _params_key(parameters)
        load_options = context.execution_options.get("_sa_orm_load_options")
        try:
            rowcount = cursor.rowcount if error is None else -1
        except Exception:
            rowcount = -1
        record = (
            shape,
            start,
            duration,
            rowcount,
            params_key,
            context.compiled,
            load_options is not None and load_options._lazy_loaded_from is not None,
            site,
            txn,
            many,
            error,
            allowed,
            parameters if capture_parameters else None,
            # What an EXPLAIN of a slow statement needs; kept in memory only, never exported.
            (statement, parameters, connection.engine) if duration >= slow_threshold else None,
        )
        for s in scopes:
            if s._closed:
                continue
            if len(s.raw) < s.max_queries:
                s.raw.append(record)
            else:
                s.drop(duration)
            if txn is not s.last_txn:
                s.last_txn = txn
                if txn not in s.txns and len(s.txns) < s.max_queries:
                    s.txns[txn] = TxnTrack(connection.info)

    except Exception as exc:
        internal_error("capture", exc)


def _on_do_execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
    frame = _stack.get()
    if frame is None and not _scope.process_scopes:
        return False
    # An "insertmanyvalues" batch comes through do_execute too, with context.executemany set.
    return _profile(
        context.dialect.do_execute,
        cursor,
        statement,
        parameters,
        context,
        frame,
        context.executemany,
    )


def _on_do_executemany(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
    frame = _stack.get()
    if frame is None and not _scope.process_scopes:
        return False
    return _profile(
        context.dialect.do_executemany, cursor, statement, parameters, context, frame, True
    )


def _on_do_execute_no_params(cursor: Any, statement: str, context: Any) -> bool:
    frame = _stack.get()
    if frame is None and not _scope.process_scopes:
        return False
    return _profile(
        context.dialect.do_execute_no_params, cursor, statement, _NO_PARAMS, context, frame, False
    )


# -- transactions: per transaction, never per statement -------------------------------------


def _tracks_of(info: Any) -> list[TxnTrack]:
    return [
        track
        for s in current_scopes()
        for track in s.txns.values()
        if track.info is info and track.end is None
    ]


def _on_reset(dbapi_connection: Any, record: Any, reset_state: Any) -> None:
    try:
        if not reset_state.transaction_was_reset:
            for track in _tracks_of(record.info):
                track.pool_reset = True
    except Exception as exc:
        internal_error("pool reset", exc)


def _on_checkin(dbapi_connection: Any, record: Any) -> None:
    try:
        if record is None:
            return
        now = _perf_counter()
        for track in _tracks_of(record.info):
            track.end = now
            if dbapi_connection is None:
                # Invalidated (its rollback failed or was cancelled, or it was lost): the
                # server rolls the transaction back, whatever else was seen.
                track.pool_reset = True
    except Exception as exc:
        internal_error("pool checkin", exc)


def _on_after_begin(session: Session, transaction: Any, connection: Any) -> None:
    try:
        root = connection.get_transaction()
        for s in current_scopes():
            if root not in s.txns:
                if len(s.txns) >= s.max_queries:
                    continue
                s.txns[root] = TxnTrack(connection.info)
            roots = s.session_txns.setdefault(session, [])
            if root not in roots:
                roots.append(root)
    except Exception as exc:
        internal_error("session after_begin", exc)


def _session_ended(session: Session, outcome: str) -> None:
    try:
        now = _perf_counter()
        for s in current_scopes():
            for root in s.session_txns.pop(session, ()):
                track = s.txns.get(root)
                if track is not None:
                    track.outcome = outcome
                    if track.end is None:
                        track.end = now
    except Exception as exc:
        internal_error("session " + outcome, exc)


def _on_after_transaction_end(session: Session, transaction: Any) -> None:
    # A Session closed without commit or rollback (the usual read-only request) ends here;
    # its connection's return to the pool then tells the outcome.
    try:
        if transaction.parent is None:
            for s in current_scopes():
                s.session_txns.pop(session, None)
    except Exception as exc:
        internal_error("session after_transaction_end", exc)


def _on_after_commit(session: Session) -> None:
    _session_ended(session, "commit")


def _on_after_rollback(session: Session) -> None:
    _session_ended(session, "rollback")


_DIALECT_LISTENERS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("do_execute", _on_do_execute),
    ("do_executemany", _on_do_executemany),
    ("do_execute_no_params", _on_do_execute_no_params),
)
_POOL_LISTENERS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("reset", _on_reset),
    ("checkin", _on_checkin),
)
_SESSION_LISTENERS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("after_begin", _on_after_begin),
    ("after_commit", _on_after_commit),
    ("after_rollback", _on_after_rollback),
    ("after_transaction_end", _on_after_transaction_end),
)


def resolve_target(target: Any) -> Any:
    """Engine class, Engine, or AsyncEngine (its ``sync_engine``); anything else: TypeError."""
    if target is Engine:
        return Engine
    sync_engine = getattr(target, "sync_engine", None)
    if isinstance(sync_engine, Engine):
        return sync_engine
    if isinstance(target, Engine):
        return target
    raise TypeError(
        f"instrument() takes SQLAlchemy Engine or AsyncEngine objects, not {target!r}; "
        "call it with no argument to instrument every engine"
    )


def install(target: Any) -> None:
    """Listen on ``target`` (the ``Engine`` class or one engine); counted, so idempotent."""
    global _session_refs
    with _lock:
        count = _installed.get(target, 0)
        if count == 0 and not (target is not Engine and _installed.get(Engine)):
            _listen(target)
        _installed[target] = count + 1
        if _session_refs == 0:
            for name, fn in _SESSION_LISTENERS:
                event.listen(Session, name, fn)
        _session_refs += 1


def uninstall(target: Any) -> None:
    """Undo one :func:`install`; the listeners go when the last profiler lets go."""
    global _session_refs
    with _lock:
        count = _installed.get(target, 0)
        if count == 0:
            return
        if count > 1:
            _installed[target] = count - 1
        else:
            del _installed[target]
            _unlisten(target)
            if target is Engine:
                # Engines instrumented one by one were covered by the class; listen on them now.
                for other in _installed:
                    _listen(other)
        _session_refs -= 1
        if _session_refs == 0:
            for name, fn in _SESSION_LISTENERS:
                if event.contains(Session, name, fn):
                    event.remove(Session, name, fn)


def _listen(target: Any) -> None:
    if target is Engine:
        # Engines listened one by one would see each statement twice: the class covers them.
        for other in _installed:
            if other is not Engine:
                _unlisten(other)
    for name, fn in _DIALECT_LISTENERS:
        event.listen(target, name, fn, retval=True)
    for name, fn in _POOL_LISTENERS:
        event.listen(target if target is Engine else target.pool, name, fn)


def _unlisten(target: Any) -> None:
    for name, fn in _DIALECT_LISTENERS:
        if event.contains(target, name, fn):
            event.remove(target, name, fn)
    pool_target = target if target is Engine else target.pool
    for name, fn in _POOL_LISTENERS:
        if event.contains(pool_target, name, fn):
            event.remove(pool_target, name, fn)


def installed_targets() -> list[Any]:
    """What is listened on now (for tests and diagnostics)."""
    with _lock:
        return list(_installed)
