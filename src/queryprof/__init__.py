"""queryprof: per-request SQL query profiling for FastAPI/Starlette and SQLAlchemy 2.x.

>>> from queryprof import Profiler, QueryProfilerMiddleware
>>> profiler = Profiler()
>>> profiler.instrument()
>>> app.add_middleware(QueryProfilerMiddleware, profiler=profiler)
"""

from queryprof._profiler import Profiler
from queryprof._settings import Settings
from queryprof.asgi import QueryProfilerMiddleware
from queryprof.findings import Finding, Plan, Query, Transaction
from queryprof.scope import Scope, allow, current_scope

__all__ = [
    "Finding",
    "Plan",
    "Profiler",
    "Query",
    "QueryProfilerMiddleware",
    "Scope",
    "Settings",
    "Transaction",
    "allow",
    "current_scope",
]
