"""The application frame behind a statement: ``"app/routes.py:42 in list_authors"``.

Called on the per-statement path, so it only walks ``f_back`` links and keeps one decision
per code object. Under asyncio, SQLAlchemy runs the driver call in a child greenlet whose
stack ends inside SQLAlchemy; the walk then continues in the parent greenlet's suspended
frame (``gr_frame``), which leads back through ``AsyncSession.execute`` to the coroutine that
awaited it.

A frame belongs to the application unless its file is in the standard library, in
site-packages, in queryprof itself, or generated (``<string>``). ``callsite_include`` patterns
(shell-style, matched against the file path or the function's qualified name) mark frames as
application even inside site-packages; ``callsite_exclude`` patterns skip application frames,
such as a thin repository layer whose callers are the interesting place.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import threading
from fnmatch import fnmatchcase
from types import CodeType, FrameType
from typing import Any

try:
    from greenlet import getcurrent
except ImportError:  # pragma: no cover - greenlet comes with sqlalchemy[asyncio]
    getcurrent = None

_current_greenlet: Any = getcurrent

CallSite = tuple[CodeType, int]

_MAX_FRAMES = 256
_MAX_CACHED_CODES = 20_000

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    dirs.update(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    return tuple(sorted(os.path.abspath(d) + os.sep for d in dirs))


class _Classifier:
    """Decides, once per code object, whether a frame of that code is application code."""

    def __init__(self) -> None:
        self._library = (*_library_dirs(), _PACKAGE_DIR)
        self._include: tuple[str, ...] = ()
        self._exclude: tuple[str, ...] = ()
        self.cache: dict[CodeType, bool] = {}
        self.evicted = 0
        self._lock = threading.Lock()

    def configure(self, include: tuple[str, ...], exclude: tuple[str, ...]) -> None:
        with self._lock:
            self._include = include
            self._exclude = exclude
            self.cache = {}

    def __call__(self, code: CodeType) -> bool:
        is_app = self._classify(code)
        cache = self.cache
        if len(cache) >= _MAX_CACHED_CODES:
            self.evicted += len(cache)
            cache.clear()
        cache[code] = is_app
        return is_app

    def _classify(self, code: CodeType) -> bool:
        filename = code.co_filename
        if self._include and _matches(self._include, filename, code.co_qualname):
            return True
        if not filename or filename.startswith("<"):
            return False
        if os.path.abspath(filename).startswith(self._library):
            return False
        return not (self._exclude and _matches(self._exclude, filename, code.co_qualname))


def _matches(patterns: tuple[str, ...], filename: str, qualname: str) -> bool:
    return any(fnmatchcase(filename, p) or fnmatchcase(qualname, p) for p in patterns)


_classifier = _Classifier()


def configure(include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> None:
    """Set the process-wide include/exclude patterns (the union of every profiler's)."""
    _classifier.configure(include, exclude)


def capture(frame: FrameType | None = None) -> CallSite | None:
    """Return ``(code, line)`` of the first application frame behind the caller, or None."""
    f: FrameType | None = frame if frame is not None else sys._getframe(1)
    cache = _classifier.cache
    greenlet: Any = None
    for _ in range(_MAX_FRAMES):
        if f is None:
            # The top of this greenlet's stack: continue where its parent is suspended.
            if _current_greenlet is None:
                return None
            greenlet = (_current_greenlet() if greenlet is None else greenlet).parent
            if greenlet is None:
                return None
            f = greenlet.gr_frame
            continue
        code = f.f_code
        is_app = cache.get(code)
        if is_app is None:
            is_app = _classifier(code)
        if is_app:
            return code, f.f_lineno
        f = f.f_back
    return None


def describe(site: CallSite | None) -> str | None:
    """Format a call site as ``"path:line in function"``, the path relative to the cwd."""
    if site is None:
        return None
    code, line = site
    return f"{_display_path(code.co_filename)}:{line} in {code.co_qualname}"


def _display_path(filename: str) -> str:
    try:
        relative = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if relative.startswith("..") else relative


def cache_stats() -> dict[str, int]:
    """Size and evictions of the per-code-object decision cache."""
    return {
        "size": len(_classifier.cache),
        "max_size": _MAX_CACHED_CODES,
        "evicted": _classifier.evicted,
    }
