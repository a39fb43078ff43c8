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
_MAX_CACHED = 10_000

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    dirs.update(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    return tuple(sorted(os.path.abspath(d) + os.sep for d in dirs))


_LIBRARY, _APP, _BY_FUNCTION = 0, 1, 2


class _Classifier:
    """Decides which frames are application code: once per file, and once per code object
    only in files where a pattern may match a function name.

    Lookups are keyed by the file name (a string caches its hash) or by ``id(code)``: hashing
    a code object hashes its whole contents, on every lookup.
    """

    def __init__(self) -> None:
        self._library = (*_library_dirs(), _PACKAGE_DIR)
        self._include: tuple[str, ...] = ()
        self._exclude: tuple[str, ...] = ()
        self.files: dict[str, int] = {}
        self.codes: dict[int, tuple[CodeType, bool]] = {}
        self.evicted = 0
        self._lock = threading.Lock()

    def configure(self, include: tuple[str, ...], exclude: tuple[str, ...]) -> None:
        with self._lock:
            self._include = include
            self._exclude = exclude
            self.files = {}
            self.codes = {}
            _hints.clear()

    def file_kind(self, filename: str) -> int:
        kind = self._file_kind(filename)
        if len(self.files) >= _MAX_CACHED:
            self.evicted += len(self.files)
            self.files.clear()
        self.files[filename] = kind
        return kind

    def _file_kind(self, filename: str) -> int:
        if self._include and any(fnmatchcase(filename, p) for p in self._include):
            return _APP
        if self._exclude and any(fnmatchcase(filename, p) for p in self._exclude):
            return _LIBRARY
        library = (
            not filename
            or filename.startswith("<")
            or os.path.abspath(filename).startswith(self._library)
        )
        if library:
            return _BY_FUNCTION if self._include else _LIBRARY
        return _BY_FUNCTION if self._exclude else _APP

    def code_is_app(self, code: CodeType) -> bool:
        entry = self.codes.get(id(code))
        if entry is not None and entry[0] is code:
            return entry[1]
        qualname = code.co_qualname
        if self._include and any(fnmatchcase(qualname, p) for p in self._include):
            is_app = True
        elif self._exclude and any(fnmatchcase(qualname, p) for p in self._exclude):
            is_app = False
        else:
            is_app = self._file_kind_without_patterns(code.co_filename)
        if len(self.codes) >= _MAX_CACHED:
            self.evicted += len(self.codes)
            self.codes.clear()
        self.codes[id(code)] = (code, is_app)
        return is_app

    def _file_kind_without_patterns(self, filename: str) -> bool:
        return not (
            not filename
            or filename.startswith("<")
            or os.path.abspath(filename).startswith(self._library)
        )


_classifier = _Classifier()


def configure(include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> None:
    """Set the process-wide include/exclude patterns (the union of every profiler's)."""
    _classifier.configure(include, exclude)


def capture(frame: FrameType | None = None) -> CallSite | None:
    """Return ``(code, bytecode offset)`` of the first application frame behind the caller.

    The offset, not the line: computing ``f_lineno`` decodes the code's line table, which
    costs more than the whole walk. :func:`describe` turns it into a line later.
    """
    return _walk(frame if frame is not None else sys._getframe(1), None)[0]


_hints: dict[str, tuple[int, int, CodeType]] = {}


def capture_statement(key: str, depth: int) -> CallSite | None:
    """:func:`capture` for the per-statement path, from ``depth`` frames above the caller.

    On Python 3.11+ every frame object the walk touches is created on the spot and must copy
    its locals when its function returns: walking SQLAlchemy's dozen frames costs several
    microseconds. So the walk remembers, per statement shape (``key``), where it found the
    application frame (greenlet hops and depth), and next time looks there first with one
    ``sys._getframe`` and checks that the same function is there. A different function
    there means a different path: the full walk runs again and updates the hint.
    """
    hint = _hints.get(key)
    if hint is not None:
        hops, hinted_depth, code = hint
        try:
            f = _frame_at(hops, hinted_depth + (depth if hops == 0 else 0))
        except Exception:
            f = None
        if f is not None and f.f_code is code:
            return code, f.f_lasti
    site, hops, found_depth = _walk(sys._getframe(depth), None)
    if site is not None:
        if len(_hints) >= _MAX_CACHED:
            _hints.clear()
        _hints[key] = (hops, found_depth, site[0])
    return site


def _frame_at(hops: int, depth: int) -> FrameType | None:
    if hops == 0:
        return sys._getframe(depth + 1)  # depth counts from capture_statement
    greenlet = _current_greenlet()
    for _ in range(hops):
        greenlet = greenlet.parent
    f = greenlet.gr_frame
    for _ in range(depth):
        f = f.f_back
    return f  # type: ignore[no-any-return]


def _walk(f: FrameType | None, greenlet: Any) -> tuple[CallSite | None, int, int]:
    """The first application frame from ``f`` on, crossing into parent greenlets; with the
    number of greenlet hops and its depth in the last greenlet's stack."""
    files = _classifier.files
    hops = depth = 0
    for _ in range(_MAX_FRAMES):
        if f is None:
            # The top of this greenlet's stack: continue where its parent is suspended.
            if _current_greenlet is None:
                break
            greenlet = (_current_greenlet() if greenlet is None else greenlet).parent
            if greenlet is None:
                break
            f = greenlet.gr_frame
            hops += 1
            depth = 0
            continue
        code = f.f_code
        kind = files.get(code.co_filename)
        if kind is None:
            kind = _classifier.file_kind(code.co_filename)
        if kind == _APP or (kind == _BY_FUNCTION and _classifier.code_is_app(code)):
            return (code, f.f_lasti), hops, depth
        f = f.f_back
        depth += 1
    return None, 0, 0


def line_of(site: CallSite) -> int:
    """The source line of a call site."""
    code, offset = site
    for start, end, line in code.co_lines():
        if start <= offset < end and line is not None:
            return line
    return code.co_firstlineno


def describe(site: CallSite | None) -> str | None:
    """Format a call site as ``"path:line in function"``, the path relative to the cwd."""
    if site is None:
        return None
    code = site[0]
    return f"{_display_path(code.co_filename)}:{line_of(site)} in {code.co_qualname}"


def _display_path(filename: str) -> str:
    try:
        relative = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if relative.startswith("..") else relative


def cache_stats() -> dict[str, int]:
    """Size and evictions of the per-code-object decision cache."""
    return {
        "size": len(_classifier.files) + len(_classifier.codes),
        "max_size": 2 * _MAX_CACHED,
        "evicted": _classifier.evicted,
    }
