"""Prometheus metrics: closed scopes into histograms and counters, pool events into gauges.

The only module that imports ``prometheus_client``. One :class:`Metrics` set exists per
registry (per process in multiprocess mode), shared by every profiler that uses it, so two
profilers, or a test suite that builds many apps, never register a metric twice.

Labels are bounded by construction: the route template (``__unmatched__`` for requests no
route matched), the normalized method, the statement's operation, the finding kind, the
transaction outcome and the pool name. Never a raw path, SQL, fingerprint or value. A scope
that is not an HTTP request has ``http_route=""`` (see :meth:`PrometheusExporter.observe`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import values as _values
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import AssertionPool, Pool, QueuePool, StaticPool

from queryprof._guard import guarded, internal_error, internal_error_count
from queryprof._settings import Settings
from queryprof.scope import Record, Scope, current_scope

_get_current_span: Any
try:  # the ``otel`` extra: exemplars need only the API
    from opentelemetry.trace import get_current_span as _get_current_span
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    _get_current_span = None

logger = logging.getLogger("queryprof")

UNMATCHED = "__unmatched__"
EXCLUDED = "queryprof.metrics.excluded"  # in scope.attributes: the /metrics request itself
ROUTE_CACHE_SIZE = 10_000  # label sets kept with their series; routes are templates

# Upper bounds of the histogram buckets (+Inf is implicit). slow_query_threshold and
# long_transaction_threshold are added when missing, so "at least the threshold" is a bucket.
QUERIES_BUCKETS = (0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
REQUEST_SECONDS_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
QUERY_SECONDS_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
TRANSACTION_SECONDS_BUCKETS = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

ROUTE_LABELS = ("http_route", "http_request_method")
ERRORS_HELP = "Errors inside queryprof, swallowed so the application never sees them."


def multiprocess() -> bool:
    """True when prometheus_client writes to ``PROMETHEUS_MULTIPROC_DIR`` (decided at its
    import, from the environment)."""
    return bool(getattr(_values.ValueClass, "_multiprocess", False))


def with_edge(buckets: tuple[float, ...], edge: float) -> tuple[float, ...]:
    return tuple(sorted({*buckets, edge}))


# -- histograms --------------------------------------------------------------------------------


class _Series:
    """One histogram series kept in plain Python: a bisect and two additions per value.

    prometheus_client's ``Histogram.observe`` takes two locks per value; a request with a
    hundred statements would pay that a hundred times. Callers hold the metrics lock.
    """

    __slots__ = ("bounds", "counts", "exemplars", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self.total = 0.0
        self.exemplars: dict[int, Exemplar] = {}

    def observe(self, value: float, exemplar: dict[str, str] | None) -> None:
        i = bisect_left(self.bounds, value)  # the first bound >= value: its bucket
        self.counts[i] += 1
        self.total += value
        if exemplar is not None:
            self.exemplars[i] = Exemplar(exemplar, value, time.time())

    def keep_exemplars(self, values: dict[int, float], exemplar: dict[str, str] | None) -> None:
        """The exemplar of each bucket in ``values`` (bucket -> its last value)."""
        if exemplar is None:
            return
        now = time.time()
        for i, value in values.items():
            self.exemplars[i] = Exemplar(exemplar, value, now)


class _FileSeries:
    """One histogram series in the multiprocess files (which keep no exemplars)."""

    __slots__ = ("child",)

    def __init__(self, child: Histogram) -> None:
        self.child = child

    def observe(self, value: float, exemplar: dict[str, str] | None) -> None:
        self.child.observe(value)


AnySeries = _Series | _FileSeries


class _Histogram(Collector):
    """A labelled histogram: :class:`_Series` read at each scrape or, in multiprocess mode,
    a prometheus_client ``Histogram`` writing to the shared files."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        bounds: tuple[float, ...],
        metrics: Metrics,
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.bounds = bounds
        self._lock = metrics.lock
        self._series: dict[tuple[str, ...], _Series] = {}
        self._files: Histogram | None = None
        if metrics.multiprocess:
            self._files = Histogram(
                name, documentation, labelnames, buckets=bounds, registry=registry
            )
        else:
            registry.register(self)

    def series(self, *labelvalues: str) -> AnySeries:
        """The series of these label values; callers hold the metrics lock."""
        if self._files is not None:
            return _FileSeries(self._files.labels(*labelvalues))
        found = self._series.get(labelvalues)
        if found is None:
            found = self._series[labelvalues] = _Series(self.bounds)
        return found

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            snapshot = [
                (labels, list(s.counts), s.total, dict(s.exemplars))
                for labels, s in self._series.items()
            ]
        edges = [floatToGoString(b) for b in (*self.bounds, math.inf)]  # type: ignore[no-untyped-call]
        for labels, counts, total, exemplars in snapshot:
            buckets: list[Any] = []
            cumulative = 0.0
            for i, edge in enumerate(edges):
                cumulative += counts[i]
                exemplar = exemplars.get(i)
                buckets.append(
                    (edge, cumulative) if exemplar is None else (edge, cumulative, exemplar)
                )
            family.add_metric(list(labels), buckets, total)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)


class _InternalErrors(Collector):
    """``queryprof_internal_errors_total``, read from the guard's count at each scrape."""

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "queryprof_internal_errors", ERRORS_HELP, value=internal_error_count()
        )

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily("queryprof_internal_errors", ERRORS_HELP)


# -- one registry's metrics ----------------------------------------------------------------------


class _RequestSeries:
    """The three per-request histograms of one route and method: HTTP scopes only."""

    __slots__ = ("db_duration", "duration", "queries")

    def __init__(self, metrics: Metrics, route: str, method: str) -> None:
        self.queries = metrics.request_queries.series(route, method)
        self.db_duration = metrics.request_db_duration.series(route, method)
        self.duration = metrics.request_duration.series(route, method)

    def observe(self, scope: Scope, exemplar: dict[str, str] | None) -> None:
        self.queries.observe(scope.query_count, exemplar)
        self.db_duration.observe(scope.db_time, exemplar)
        self.duration.observe(scope.duration or 0.0, exemplar)


class _Route:
    """The series of one (route, method) label set, made on first use."""

    __slots__ = ("findings", "operations", "request", "route", "txns")

    def __init__(self, metrics: Metrics, route: str, method: str, http: bool) -> None:
        self.route = route
        self.request = _RequestSeries(metrics, route, method) if http else None
        self.operations: dict[str, AnySeries] = {}
        self.txns: dict[str, AnySeries] = {}
        self.findings: dict[str, Counter] = {}


class Metrics:
    """The queryprof metrics of one registry, shared by every profiler that uses it."""

    def __init__(self, registry: CollectorRegistry, settings: Settings) -> None:
        # No reference to the registry is kept: the registry (its key in _sets) must be
        # free to go when the application lets go of it.
        self.multiprocess = multiprocess()
        self.lock = threading.Lock()
        self.query_buckets = with_edge(QUERY_SECONDS_BUCKETS, settings.slow_query_threshold)
        self.txn_buckets = with_edge(
            TRANSACTION_SECONDS_BUCKETS, settings.long_transaction_threshold
        )
        self.request_queries = _Histogram(
            "queryprof_http_request_queries",
            "SQL statements per HTTP request (transaction control excluded).",
            ROUTE_LABELS,
            QUERIES_BUCKETS,
            self,
            registry,
        )
        self.request_db_duration = _Histogram(
            "queryprof_http_request_db_duration_seconds",
            "Seconds per HTTP request spent in SQL statements.",
            ROUTE_LABELS,
            REQUEST_SECONDS_BUCKETS,
            self,
            registry,
        )
        self.request_duration = _Histogram(
            "queryprof_http_request_duration_seconds",
            "Seconds per HTTP request, as profiled (response and background tasks included).",
            ROUTE_LABELS,
            REQUEST_SECONDS_BUCKETS,
            self,
            registry,
        )
        self.query_duration = _Histogram(
            "queryprof_db_query_duration_seconds",
            "Seconds per SQL statement, by operation and route.",
            ("db_operation_name", "http_route"),
            self.query_buckets,
            self,
            registry,
        )
        self.txn_duration = _Histogram(
            "queryprof_db_transaction_duration_seconds",
            "Seconds per database transaction, from its first statement to its end.",
            ("outcome", "http_route"),
            self.txn_buckets,
            self,
            registry,
        )
        self.findings = Counter(
            "queryprof_findings",
            "Findings: n_plus_one, duplicate_query, repeated_write, slow_query, long_transaction.",
            ("kind", "http_route"),
            registry=registry,
        )
        self.pools = PoolGauges(self, registry)
        self._errors: Counter | None = None
        self._errors_seen = 0
        if self.multiprocess:
            # A collector cannot see the other workers; a counter in the shared files can.
            self._errors = Counter("queryprof_internal_errors", ERRORS_HELP, registry=registry)
        else:
            registry.register(_InternalErrors())
        self.routes: dict[tuple[str, str], _Route] = {}  # (route, method) -> its series

    def route(self, key: tuple[str, str], http: bool) -> _Route:
        """The series of a new label set; hold the lock."""
        if len(self.routes) >= ROUTE_CACHE_SIZE:
            self.routes.clear()
        found = self.routes[key] = _Route(self, *key, http)
        return found

    def operation(self, route: _Route, operation: str) -> AnySeries:
        found = route.operations[operation] = self.query_duration.series(operation, route.route)
        return found

    def transaction(self, route: _Route, outcome: str) -> AnySeries:
        found = route.txns[outcome] = self.txn_duration.series(outcome, route.route)
        return found

    def finding(self, route: _Route, kind: str) -> Counter:
        found = route.findings[kind] = self.findings.labels(kind, route.route)
        return found

    def sync_internal_errors(self) -> None:
        """Multiprocess mode: bring this worker's counter up to the guard's count."""
        if self._errors is None:
            return
        with self.lock:
            count = internal_error_count()
            if count > self._errors_seen:
                self._errors.inc(count - self._errors_seen)
                self._errors_seen = count


# -- pools ---------------------------------------------------------------------------------------


class PoolGauges(Collector):
    """``queryprof_db_pool_connections{pool,state}`` and the pools' capacity.

    Single process: a connection record is remembered when an event first shows it
    (connect, or its first checkin), and a scrape counts the open ones by SQLAlchemy's own
    state: checked out (``in_use``) is used, else idle. Nothing runs per checkout, and a
    record of a pool that is gone is gone from the count with it.

    Multiprocess: a scrape cannot see the other workers' records, so every event (connect,
    checkout, checkin, close, detach) sets the record's state in ``record.record_info`` and
    writes this worker's counts to the shared files, which ``livesum`` adds up. A listener
    that fires twice (an engine listened on its own and through the Engine class) finds
    the state already set and changes nothing.
    """

    CONNECTIONS = "queryprof_db_pool_connections"
    CONNECTIONS_HELP = "Connections of the SQLAlchemy pool: used (checked out) or idle (in it)."
    MAX = "queryprof_db_pool_max_connections"
    MAX_HELP = "Most connections the pool may open (pool_size + max_overflow)."
    STATES = ("used", "idle")

    def __init__(self, metrics: Metrics, registry: CollectorRegistry) -> None:
        self._lock = metrics.lock
        self._labels: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._capacities: weakref.WeakKeyDictionary[Pool, tuple[str, int]] = (
            weakref.WeakKeyDictionary()
        )
        self._pools: set[str] = set()  # every pool label seen: both states always exported
        self._targets: dict[Any, int] = {}
        self._files: tuple[Gauge, Gauge] | None = None
        self._counts: dict[tuple[str, str], int] = {}  # multiprocess: what the files hold
        self._listeners: tuple[tuple[str, Callable[..., None]], ...]
        if metrics.multiprocess:
            self._files = (
                Gauge(self.CONNECTIONS, self.CONNECTIONS_HELP, ("pool", "state"),
                      multiprocess_mode="livesum", registry=registry),
                Gauge(self.MAX, self.MAX_HELP, ("pool",),
                      multiprocess_mode="livesum", registry=registry),
            )  # fmt: skip
            self._listeners = (
                ("connect", lambda conn, record: self._move("connect", record, "idle")),
                ("checkout", lambda conn, record, proxy: self._move("checkout", record, "used")),
                ("checkin", self._checkin),
                ("close", lambda conn, record: self._move("close", record, None)),
                ("detach", lambda conn, record: self._move("detach", record, None)),
            )  # fmt: skip
        else:
            registry.register(self)
            self._listeners = (
                ("connect", lambda conn, record: self._see(record)),
                ("checkin", lambda conn, record: self._see(record)),
            )

    def listen(self, target: Any) -> None:
        """Follow the pool of ``target``, an Engine, or of every engine (the Engine class)."""
        with self._lock:
            count = self._targets.get(target, 0)
            self._targets[target] = count + 1
        if not count:
            pools = target if target is Engine else target.pool
            for name, fn in self._listeners:
                event.listen(pools, name, fn)

    def unlisten(self, target: Any) -> None:
        with self._lock:
            count = self._targets.pop(target, 0)
            if count > 1:
                self._targets[target] = count - 1
        if count == 1:
            pools = target if target is Engine else target.pool
            for name, fn in self._listeners:
                if event.contains(pools, name, fn):
                    event.remove(pools, name, fn)

    # -- single process --------------------------------------------------------------------

    def _see(self, record: Any) -> None:
        try:
            info = record.record_info
            if self not in info:
                info[self] = True
                self._first_sight(record)
        except Exception as exc:
            internal_error("pool event", exc)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            records = list(self._labels.items())
            counts = {(label, state): 0 for label in self._pools for state in self.STATES}
            capacities = {label: self._capacity(label) for label, _ in self._capacities.values()}
        for record, label in records:
            if record.dbapi_connection is not None:  # None: closed, invalidated or detached
                counts[label, "used" if record.in_use else "idle"] += 1
        connections = GaugeMetricFamily(
            self.CONNECTIONS, self.CONNECTIONS_HELP, labels=("pool", "state")
        )
        for key, count in sorted(counts.items()):
            connections.add_metric(list(key), count)
        most = GaugeMetricFamily(self.MAX, self.MAX_HELP, labels=("pool",))
        for label, capacity in sorted(capacities.items()):
            most.add_metric([label], capacity)
        yield connections
        yield most

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.CONNECTIONS, self.CONNECTIONS_HELP, labels=("pool", "state"))
        yield GaugeMetricFamily(self.MAX, self.MAX_HELP, labels=("pool",))

    # -- multiprocess ----------------------------------------------------------------------

    def _move(self, where: str, record: Any, state: str | None) -> None:
        try:
            info = record.record_info
            old = info.get(self, _UNSEEN)
            if old == state:
                return
            if old is _UNSEEN:
                self._first_sight(record)
            info[self] = state
            label = self._labels[record]
            with self._lock:
                if old in self.STATES:
                    self._add(label, old, -1)
                if state is not None:
                    self._add(label, state, 1)
        except Exception as exc:
            internal_error("pool " + where, exc)

    def _checkin(self, dbapi_connection: Any, record: Any) -> None:
        # An invalidated connection comes back without its DBAPI connection: closed.
        self._move("checkin", record, None if dbapi_connection is None else "idle")

    def _add(self, label: str, state: str, change: int) -> None:
        assert self._files is not None
        count = self._counts[label, state] = self._counts.get((label, state), 0) + change
        self._files[0].labels(label, state).set(count)

    # -- both --------------------------------------------------------------------------------

    def _first_sight(self, record: Any) -> None:
        pool = pool_of(record)
        label = pool_label(pool)
        with self._lock:
            self._labels[record] = label
            self._pools.add(label)
            if pool is None or pool in self._capacities:
                return
            capacity = pool_capacity(pool)
            if capacity is None:
                return
            self._capacities[pool] = (label, capacity)
            if self._files is not None:
                self._files[1].labels(label).set(self._capacity(label))

    def _capacity(self, label: str) -> int:
        return sum(c for name, c in self._capacities.values() if name == label)


_UNSEEN = object()  # a record no event has shown to these metrics yet


def pool_of(record: Any) -> Pool | None:
    """The pool of a connection record. SQLAlchemy has no public accessor for it, and a
    listener on the Engine class is one listener for every pool."""
    pool = getattr(record, "_ConnectionRecord__pool", None)
    return pool if isinstance(pool, Pool) else None


def pool_label(pool: Pool | None) -> str:
    """``create_engine(..., pool_logging_name=...)`` when set, else the dialect's name."""
    name = getattr(pool, "logging_name", None)
    if isinstance(name, str) and name:
        return name
    dialect = getattr(pool, "_dialect", None)
    return str(getattr(dialect, "name", None) or "unknown")


def pool_capacity(pool: Pool) -> int | None:
    """pool_size + max_overflow of a QueuePool; 1 for the single-connection pools; None
    for pools without a bound (NullPool, unlimited overflow) or with one per thread."""
    if isinstance(pool, QueuePool):
        overflow = getattr(pool, "_max_overflow", -1)
        return pool.size() + overflow if isinstance(overflow, int) and overflow >= 0 else None
    if isinstance(pool, StaticPool | AssertionPool):
        return 1
    return None


# -- one set per registry ------------------------------------------------------------------------

_sets_lock = threading.Lock()
_sets: weakref.WeakKeyDictionary[CollectorRegistry, Metrics] = weakref.WeakKeyDictionary()
_process_set: list[Metrics] = []  # multiprocess mode: the files are per process, not registry
_warned: set[tuple[int, str, float]] = set()


def metrics_for(registry: CollectorRegistry, settings: Settings) -> Metrics:
    """The metrics set of ``registry``, made (and registered) by its first profiler."""
    with _sets_lock:
        found = _process_set[0] if _process_set else _sets.get(registry)
        if found is None:
            found = Metrics(registry, settings)
            if found.multiprocess:
                _process_set.append(found)
            else:
                _sets[registry] = found
    _check_edge(found, "slow_query_threshold", found.query_buckets, settings)
    _check_edge(found, "long_transaction_threshold", found.txn_buckets, settings)
    return found


def _check_edge(
    metrics: Metrics, name: str, buckets: tuple[float, ...], settings: Settings
) -> None:
    value = getattr(settings, name)
    key = (id(metrics), name, value)
    if value in buckets or key in _warned:
        return
    _warned.add(key)
    logger.warning(
        "queryprof: %s=%r is not a bucket edge of the histograms another Profiler already "
        "registered in this registry; pass registry= to give this profiler its own",
        name,
        value,
    )


def _observe_statements(
    metrics: Metrics, route: _Route, records: list[Record], exemplar: dict[str, str] | None
) -> None:
    """Every statement's duration into its operation's series; hold the metrics lock.

    The loop a request with many statements pays for each of them, so it is inlined: the
    series is looked up again only when the operation changes, a plain series is updated
    in place (a bisect and two additions), and an exemplar, if any, is stored once per
    bucket touched (the last value in it, as a call per value would leave it).
    """
    operations = route.operations
    last_operation = None
    series: AnySeries | None = None
    touched: dict[int, float] | None = {} if exemplar is not None else None
    for record in records:
        operation = record.shape.operation
        if operation is not last_operation:
            if touched and isinstance(series, _Series):
                series.keep_exemplars(touched, exemplar)
                touched = {}
            last_operation = operation
            series = operations.get(operation) or metrics.operation(route, operation)
        duration = record.duration
        if type(series) is _Series:
            i = bisect_left(series.bounds, duration)
            series.counts[i] += 1
            series.total += duration
            if touched is not None:
                touched[i] = duration
        else:
            series.observe(duration, exemplar)  # type: ignore[union-attr]
    if touched and isinstance(series, _Series):
        series.keep_exemplars(touched, exemplar)


# -- what a profiler holds -----------------------------------------------------------------------


class PrometheusExporter:
    """A profiler's view of its registry's metrics: the scope callback and the endpoint."""

    def __init__(self, settings: Settings) -> None:
        registry = settings.registry
        if registry is None:
            registry = REGISTRY
        elif not isinstance(registry, CollectorRegistry):
            raise TypeError(
                f"registry must be a prometheus_client CollectorRegistry, not {registry!r}"
            )
        self.registry = registry
        self.metrics = metrics_for(registry, settings)
        self._exemplars = (
            _get_current_span is not None
            and settings.opentelemetry is not False
            and not self.metrics.multiprocess  # the multiprocess files keep no exemplars
        )

    def listen_pool(self, target: Any) -> None:
        self.metrics.pools.listen(target)

    def unlisten_pool(self, target: Any) -> None:
        self.metrics.pools.unlisten(target)

    def observe(self, scope: Scope) -> None:
        """Feed one closed scope into the metrics: labels resolved once, series cached.

        HTTP scopes are labelled with their route template and method. Any other scope (a
        job, a CLI command) feeds the statement, finding and transaction metrics with
        ``http_route=""``, and only when it is outermost: a scope opened inside another one,
        or a process-wide one (the pytest plugin's test scope), holds statements that the
        enclosing scope, or the requests, already count.
        """
        metrics = self.metrics
        if metrics.multiprocess:
            metrics.sync_internal_errors()
        if scope.attributes and scope.attributes.get(EXCLUDED):
            return
        http = scope.kind == "http"
        if http:
            key = (scope.route or UNMATCHED, scope.method or "_OTHER")
        elif current_scope() is None and not getattr(scope, "_process_wide", False):
            key = ("", "")
        else:
            return
        exemplar = self._exemplar() if self._exemplars else None
        records = scope.records
        with metrics.lock:
            route = metrics.routes.get(key) or metrics.route(key, http)
            if route.request is not None:
                route.request.observe(scope, exemplar)
            if records:
                _observe_statements(metrics, route, records, exemplar)
            for txn in scope.transactions:
                series = route.txns.get(txn.outcome) or metrics.transaction(route, txn.outcome)
                series.observe(txn.duration, exemplar)
        for finding in scope.findings:
            counter = route.findings.get(finding.kind) or metrics.finding(route, finding.kind)
            counter.inc(1, exemplar)

    def _exemplar(self) -> dict[str, str] | None:
        """trace_id/span_id of the sampled OpenTelemetry span active as the scope closes."""
        context = _get_current_span().get_span_context()
        if not context.is_valid or not context.trace_flags.sampled:
            return None
        return {
            "trace_id": format(context.trace_id, "032x"),
            "span_id": format(context.span_id, "016x"),
        }

    # -- the endpoint --------------------------------------------------------------------------

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The metrics in the format ``accept`` asks for (OpenMetrics or the text format)."""
        encoder, content_type = choose_encoder(accept)
        if not self.metrics.multiprocess:
            return encoder(self.registry), content_type
        self.metrics.sync_internal_errors()
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # every worker's files
        return encoder(registry), content_type

    async def endpoint(self, request: Any) -> Any:
        from starlette.responses import Response

        with guarded("metrics endpoint"):
            scope = current_scope()
            if scope is not None and scope.kind == "http":
                scope.attributes[EXCLUDED] = True  # the scrape is not the app's traffic
        try:
            body, content_type = self.exposition(request.headers.get("accept", ""))
        except Exception as exc:
            internal_error("metrics endpoint", exc)
            return Response("metrics unavailable\n", status_code=500, media_type="text/plain")
        return Response(body, headers={"Content-Type": content_type})
