"""EXPLAIN plans for slow queries: per-dialect runners, the worker, hints and redaction.

``Profiler(explain=True)`` (the default) builds an :class:`Explainer`; each slow-query
finding then gets its :class:`~queryprof.findings.Plan` off the request path. See
``docs/explain.md``.
"""

from queryprof.explain.worker import Explainer

__all__ = ["Explainer"]
