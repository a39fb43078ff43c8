"""One guard for every callback into queryprof: count internal errors, log each kind once.

A profiler that raises into the application it watches is worse than none, so every event
listener, middleware hook and exporter runs its own work inside :func:`guarded` or calls
:func:`internal_error` from an ``except`` block. The count is exported as
``queryprof_internal_errors_total``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("queryprof")

_lock = threading.Lock()
_count = 0
_logged: set[str] = set()
_MAX_LOGGED_KINDS = 256


def internal_error(where: str, exc: BaseException) -> None:
    """Count an internal error; log it (with its traceback) the first time this kind is seen."""
    global _count
    kind = f"{where}:{type(exc).__name__}"
    with _lock:
        _count += 1
        first = kind not in _logged and len(_logged) < _MAX_LOGGED_KINDS
        if first:
            _logged.add(kind)
    if first:
        try:
            logger.error(
                "queryprof internal error in %s (further ones of this kind are only counted)",
                where,
                exc_info=exc,
            )
        except Exception:
            pass


def internal_error_count() -> int:
    """How many internal errors queryprof has swallowed in this process."""
    return _count


@contextmanager
def guarded(where: str) -> Iterator[None]:
    """Run a block of queryprof's own work; an exception in it is counted, never raised."""
    try:
        yield
    except Exception as exc:
        internal_error(where, exc)
