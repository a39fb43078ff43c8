"""OpenTelemetry: findings on spans (or as log events), a summary on the request's span.

The only module that imports OpenTelemetry (with ``export/prometheus.py``'s exemplars, which
need only the API). What a tracing backend gets:

* On the request's server span: ``queryprof.db.query_count``, ``queryprof.db.duration`` and
  ``queryprof.findings.<kind>`` for every finding kind. They are set as the last response
  chunk is about to be sent: FastAPI's native telemetry ends its server span right after it.
* One event per finding (``queryprof.n_plus_one``, ``queryprof.slow_query``, ...) with the
  finding's fields as attributes, on the same span; or, with ``opentelemetry_findings="log"``
  (or ``"both"``), as OpenTelemetry log records with that event name. Span events are being
  phased out upstream in favour of log events.
* Findings known only once the scope closes (a background task's statements, a transaction
  that ended after the response) go on the span if it is still open (the ASGI
  instrumentation ends it later than FastAPI does); else a short span under it, named like
  the event, carries them. So does a slow query's plan (``queryprof.plan``), which is
  obtained after the request.

Nothing here runs per statement except :func:`tag_query_span` (see ``capture.py``), and only
when a profiler has OpenTelemetry on. Every value is a statement shape, a fingerprint or a
count: no parameter values and no SQL literals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry import _logs, trace
from opentelemetry._logs import SeverityNumber

from queryprof.asgi import SPAN  # in scope.attributes: the request's span, taken at its start
from queryprof.findings import FINDING_KINDS, Finding
from queryprof.fingerprint import shorten

if TYPE_CHECKING:
    from queryprof._settings import Settings
    from queryprof.scope import Scope

_SENT = "queryprof.otel.sent"  # in scope.attributes: the findings already sent
MAX_EVENTS_PER_SCOPE = 50  # a finding past it is counted in queryprof.findings.not_emitted
MAX_SQL_CHARS = 1000  # statement shapes in attributes are cut to this many characters


class OpenTelemetryExporter:
    """A profiler's OpenTelemetry output: the request summary and its findings."""

    def __init__(self, settings: Settings) -> None:
        self.span_events = settings.opentelemetry_findings in ("span", "both")
        self.log_events = settings.opentelemetry_findings in ("log", "both")
        self._logger: Any = None
        self._tracer: Any = None

    @staticmethod
    def request_span() -> Any:
        """The span the request runs in (FastAPI's or the ASGI instrumentation's), if sampled."""
        span = trace.get_current_span()
        return span if span.is_recording() else None

    def response_ending(self, scope: Scope, findings: list[Finding]) -> None:
        """The last response chunk is about to go out: summary and findings on the span now."""
        span = scope.attributes.get(SPAN)
        if span is not None and span.is_recording():
            _summarize(span, scope, findings)
            self._emit(scope, span, findings)

    def scope_closed(self, scope: Scope) -> None:
        """The final numbers, and the findings not sent yet (those known only now)."""
        span = scope.attributes.get(SPAN)
        if span is None:  # not a request: the span current as the scope closes
            span = trace.get_current_span()
            if not span.is_recording():
                return
            scope.attributes[SPAN] = span
        if span.is_recording():
            _summarize(span, scope, scope.findings)
        self._emit(scope, span, scope.findings)

    def plans_in(self, scope: Scope) -> None:
        """Slow queries' plans, in after the scope closed (the EXPLAIN runs after it)."""
        span = scope.attributes.get(SPAN)
        if span is not None:
            self._emit(scope, span, scope.findings)

    def _emit(self, scope: Scope, span: Any, findings: list[Finding]) -> None:
        # finding -> whether its plan went out with it
        sent: dict[tuple[Any, ...], bool] = scope.attributes.setdefault(_SENT, {})
        skipped = 0
        for finding in findings:
            key = (finding.kind, finding.fingerprint, finding.location)
            with_plan = finding.plan is not None
            if key not in sent:
                if len(sent) >= MAX_EVENTS_PER_SCOPE:
                    skipped += 1
                    continue
                self._send(span, f"queryprof.{finding.kind}", finding, finding_attributes(finding))
            elif with_plan and not sent[key]:
                self._send(span, "queryprof.plan", finding, plan_attributes(finding))
            else:
                continue
            sent[key] = with_plan
        if skipped and span.is_recording():
            span.set_attribute("queryprof.findings.not_emitted", skipped)

    def _send(self, span: Any, name: str, finding: Finding, attributes: dict[str, Any]) -> None:
        if self.span_events:
            if span.is_recording():
                span.add_event(name, attributes)
            else:  # the request's span has ended: a short span under it carries the event
                if self._tracer is None:
                    self._tracer = trace.get_tracer("queryprof")
                parent = trace.set_span_in_context(span)
                self._tracer.start_span(name, parent, attributes=attributes).end()
        if self.log_events:
            if self._logger is None:
                self._logger = _logs.get_logger("queryprof")
            self._logger.emit(
                context=trace.set_span_in_context(span),
                severity_number=SeverityNumber.WARN,
                severity_text="WARN",
                body=str(finding),
                attributes=attributes,
                event_name=name,
            )


def _summarize(span: Any, scope: Scope, findings: list[Finding]) -> None:
    counts = dict.fromkeys(FINDING_KINDS, 0)
    for finding in findings:
        counts[finding.kind] += 1
    attributes: dict[str, Any] = {
        "queryprof.db.query_count": scope.query_count,
        "queryprof.db.duration": scope.db_time,
    }
    for kind, count in counts.items():
        attributes[f"queryprof.findings.{kind}"] = count
    span.set_attributes(attributes)


def finding_attributes(finding: Finding) -> dict[str, Any]:
    """A finding's fields as OpenTelemetry attributes (None values left out)."""
    attributes: dict[str, Any] = {
        "queryprof.finding.kind": finding.kind,
        "queryprof.finding.count": finding.count,
        "queryprof.finding.duration": finding.duration,
        "db.query.summary": shorten(finding.sql, MAX_SQL_CHARS),
        "queryprof.fingerprint": finding.fingerprint,
    }
    optional = {
        "queryprof.location": finding.location,
        "queryprof.relationship": finding.relationship,
        "queryprof.suggestion": finding.suggestion,
        "queryprof.detail": finding.detail,
    }
    attributes.update({k: v for k, v in optional.items() if v is not None})
    if finding.plan is not None:
        attributes.update(plan_attributes(finding))
    return attributes


def plan_attributes(finding: Finding) -> dict[str, Any]:
    """A slow query's plan: its status, a one-line summary and the hints."""
    plan = finding.plan
    if plan is None:
        return {}
    attributes: dict[str, Any] = {
        "queryprof.fingerprint": finding.fingerprint,
        "queryprof.plan.status": plan.status,
        "queryprof.plan.summary": str(plan)[:MAX_SQL_CHARS],
    }
    if plan.hints:
        attributes["queryprof.plan.hints"] = [h[:MAX_SQL_CHARS] for h in plan.hints[:5]]
    return attributes


def tag_query_span(context: Any, fingerprint: str) -> None:
    """Put the fingerprint on opentelemetry-instrumentation-sqlalchemy's span of a statement.

    That instrumentation opens its span in ``before_cursor_execute`` and keeps it on the
    execution context as ``_otel_span`` until ``after_cursor_execute``; the dialect's
    ``do_execute``, where queryprof runs the statement, falls in between. A private
    attribute: when it is missing or is no span, nothing happens.
    """
    span = getattr(context, "_otel_span", None)
    if span is not None and isinstance(span, trace.Span) and span.is_recording():
        span.set_attribute("queryprof.fingerprint", fingerprint)
