"""The Profiler: settings, instrumentation, scopes, and what happens when a scope closes."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from queryprof import callsite, capture
from queryprof._guard import guarded, internal_error
from queryprof._settings import Settings
from queryprof.detect import analyze
from queryprof.scope import Scope

if TYPE_CHECKING:
    from queryprof.export.otel import OpenTelemetryExporter

ScopeCallback = Callable[[Scope], None]

_live_lock = threading.Lock()
_live: weakref.WeakSet[Profiler] = weakref.WeakSet()  # profilers with listeners installed


class Profiler:
    """Counts, times and analyses the SQL statements of each scope (request, test, job).

    >>> profiler = Profiler(slow_query_threshold=0.2)
    >>> profiler.instrument()            # every Engine, sync and async
    >>> app.add_middleware(QueryProfilerMiddleware, profiler=profiler)

    Settings are keyword-only and checked here: a bad value raises ``ValueError`` or
    ``TypeError`` naming the setting. ``QUERYPROF_ENABLED=0`` in the environment turns the
    profiler off: ``instrument()`` then attaches no listener at all.
    """

    def __init__(self, **settings: Any) -> None:
        self.settings = Settings.from_environment(**settings)
        self._targets: list[Any] = []
        self._on_close: list[ScopeCallback] = []
        from queryprof.export.prometheus import PrometheusExporter

        self._metrics = PrometheusExporter(self.settings)  # a bad registry= raises here
        self._otel = _opentelemetry(self.settings)
        # -- EXPLAIN plans of slow queries (explain/, docs/explain.md) --------------------------
        from queryprof.explain import Explainer

        self.explainer: Explainer | None = None
        if self.settings.enabled and self.settings.explain:
            self.explainer = Explainer(self.settings)
        # Findings go out as soon as they are known; a slow query's once its plan is in.
        if self.settings.log_findings:
            from queryprof.export.logging import log_findings

            held = self.explainer.hold_back(log_findings) if self.explainer else log_findings
            self._on_close.append(held)
        self._on_close.append(self._metrics.observe)
        if self._otel is not None:
            self._on_close.append(self._otel.scope_closed)
            if self.explainer is not None:
                self._on_close.append(self.explainer.hold_back(self._otel.plans_in))

    def __repr__(self) -> str:
        state = "instrumented" if self._targets else "not instrumented"
        return f"<Profiler {state} enabled={self.settings.enabled}>"

    # -- instrumentation --------------------------------------------------------------------

    def instrument(self, *engines: Any) -> None:
        """Listen to SQLAlchemy: every engine (no argument), or these Engines/AsyncEngines.

        Calling it again is harmless; :meth:`uninstrument` removes what it added.
        """
        targets = [capture.resolve_target(e) for e in engines] if engines else [Engine]
        if not self.settings.enabled:
            return
        for target in targets:
            if target not in self._targets:
                capture.install(target)
                self._metrics.listen_pool(target)
                self._targets.append(target)
        with _live_lock:
            _live.add(self)
        _apply_process_settings()

    def uninstrument(self) -> None:
        """Remove every listener this profiler added."""
        for target in self._targets:
            capture.uninstall(target)
            self._metrics.unlisten_pool(target)
        self._targets.clear()
        with _live_lock:
            _live.discard(self)
        _apply_process_settings()

    @property
    def instrumented(self) -> bool:
        return bool(self._targets)

    # -- scopes -----------------------------------------------------------------------------

    def scope(self, name: str, *, kind: str = "custom", process_wide: bool = False) -> Scope:
        """A scope to wrap a unit of work: ``with profiler.scope("nightly-import"):``.

        Statements run inside count toward it and toward every scope that encloses it.
        When it closes, its findings are computed and reported (logged, exported).
        A ``process_wide`` scope sees every statement of the process while it is open,
        whatever thread or event loop runs it (the pytest plugin's test scope).
        """
        if not isinstance(name, str):
            raise TypeError(f"scope name must be a string, not {name!r}")
        return Scope(
            name,
            kind=kind,
            max_queries=self.settings.max_queries_per_scope,
            capture_parameters=self.settings.capture_parameters,
            on_close=self._close,
            process_wide=process_wide,
            sample_rate=self.settings.sample_rate,
        )

    def on_scope_close(self, callback: ScopeCallback) -> None:
        """Call ``callback(scope)`` after each of this profiler's scopes is analysed.

        The callback runs inside queryprof's guard: an exception in it is counted and logged,
        never raised into the application.
        """
        self._on_close.append(callback)

    # -- metrics ----------------------------------------------------------------------------

    async def metrics_endpoint(self, request: Any) -> Any:
        """The Prometheus exposition, as a Starlette/FastAPI endpoint.

        >>> app.add_route("/metrics", profiler.metrics_endpoint)

        Served at exactly that path, in OpenMetrics when the ``Accept`` header asks for it
        (exemplars), else in the text format; with ``PROMETHEUS_MULTIPROC_DIR`` set, the sum
        of every worker. The request for it is not itself counted in the metrics.
        """
        return await self._metrics.endpoint(request)

    def _response_ending(self, scope: Scope) -> None:
        """The middleware is about to send a traced request's last response chunk."""
        if self._otel is None:
            return
        findings = analyze(scope, self.settings)
        scope.attributes[_EARLY_ANALYSIS] = (_analysis_input(scope), findings)
        self._otel.response_ending(scope, findings)

    def _close(self, scope: Scope) -> None:
        with guarded("analyze"):
            early = scope.attributes.pop(_EARLY_ANALYSIS, None)
            if early is not None and early[0] is not None and early[0] == _analysis_input(scope):
                scope.findings = early[1]  # nothing happened since the response ended
            else:
                scope.findings = analyze(scope, self.settings)
        if self.explainer is not None:  # slow queries' plans, obtained off the request path
            with guarded("explain"):
                self.explainer.submit(scope)
        self._report(scope)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every pending EXPLAIN plan is in and its finding logged.

        >>> await profiler.flush()       # in tests and demos: deterministic plans and logs

        Returns False if ``timeout`` seconds passed first. Every plan is bounded by
        ``explain_timeout`` anyway, so without a timeout this still returns.
        """
        if self.explainer is None:
            return True
        return await self.explainer.flush(timeout)

    def flush_sync(self, timeout: float | None = None) -> bool:
        """:meth:`flush` for sync code (a script, a ``TestClient`` test).

        Not from inside a running event loop whose async engine has plans pending: those
        plans are obtained on that loop. Use ``await profiler.flush()`` there.
        """
        if self.explainer is None:
            return True
        return self.explainer.flush_sync(timeout)

    def _report(self, scope: Scope) -> None:
        for callback in self._on_close:
            try:  # not guarded(): a context manager costs ~2 us per request here
                callback(scope)
            except Exception as exc:
                internal_error("report", exc)


_EARLY_ANALYSIS = "queryprof.early_analysis"  # in scope.attributes


def _analysis_input(scope: Scope) -> tuple[Any, ...] | None:
    """What the findings depend on; None while a transaction is open (its length grows)."""
    txns = scope.txns.values()
    if any(t.end is None for t in txns):
        return None
    return (scope.query_count, tuple((t.outcome, t.pool_reset) for t in txns))


def _opentelemetry(settings: Settings) -> OpenTelemetryExporter | None:
    """The OpenTelemetry exporter, or None when it is off (or "auto" and not installed)."""
    if not settings.enabled or settings.opentelemetry is False:
        return None
    try:
        from queryprof.export.otel import OpenTelemetryExporter
    except ImportError as exc:
        if settings.opentelemetry is True:
            raise ImportError(
                "opentelemetry=True needs the OpenTelemetry API and SDK: "
                "pip install 'queryprof[otel]' (or pass opentelemetry='auto')"
            ) from exc
        return None
    return OpenTelemetryExporter(settings)


def _apply_process_settings() -> None:
    """Listeners are shared by every profiler: give them the union of what profilers ask."""
    with _live_lock:
        profilers = list(_live)
    include = tuple(dict.fromkeys(p for pr in profilers for p in pr.settings.callsite_include))
    exclude = tuple(dict.fromkeys(p for pr in profilers for p in pr.settings.callsite_exclude))
    callsite.configure(include, exclude)
    capture.capture_parameters = any(pr.settings.capture_parameters for pr in profilers)
    capture.slow_threshold = min(
        (pr.settings.slow_query_threshold for pr in profilers), default=float("inf")
    )
    capture.route_tags = any(pr.settings.sql_route_tags for pr in profilers)
    capture.tag_query_span = None
    if any(pr._otel is not None for pr in profilers):
        from queryprof.export.otel import tag_query_span

        capture.tag_query_span = tag_query_span
