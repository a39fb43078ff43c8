"""The pure ASGI middleware: one scope per HTTP request, named by its route template."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from queryprof._guard import guarded, internal_error
from queryprof.capture import ROUTE_COMMENT
from queryprof.sqlcomment import route_comment

if TYPE_CHECKING:
    from queryprof._profiler import Profiler
    from queryprof.scope import Scope

ASGIScope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[ASGIScope, Receive, Send], Awaitable[None]]

UNMATCHED = "__unmatched__"
METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "QUERY")
)
_FASTAPI_ROUTE_CONTEXT = "effective_route_context"  # FastAPI >= 0.137
SPAN = "queryprof.otel.span"  # in the request scope's attributes: its OpenTelemetry span


class QueryProfilerMiddleware:
    """Profile every HTTP request: ``app.add_middleware(QueryProfilerMiddleware, profiler=p)``.

    Opens one scope per request, named ``"GET /authors/{author_id}"`` (the route template,
    never the raw path; ``__unmatched__`` for 404, 405 and redirects), and closes it when the
    response and its background tasks are done, even when the endpoint raises (the exception
    propagates unchanged). Websocket and lifespan traffic passes straight through.
    """

    def __init__(self, app: ASGIApp, *, profiler: Profiler) -> None:
        self.app = app
        self.profiler = profiler

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.profiler.settings.enabled:
            await self.app(scope, receive, send)
            return
        request = _open(self.profiler, scope)
        if request is None:
            await self.app(scope, receive, send)
            return
        server_timing = self.profiler.settings.server_timing
        traced = SPAN in request.attributes
        entry = (scope.get("root_path", ""), scope.get("app"))
        trailers = named = False

        async def send_wrapper(message: Message) -> None:
            nonlocal trailers, named
            kind = message["type"]
            if kind == "http.response.start":
                trailers = message.get("trailers", False)
                with guarded("response start"):
                    _name(request, scope, *entry)
                    named = True  # the router has long finished: the name is final
                    if server_timing:
                        message["headers"] = [*message.get("headers", ()), _timing(request)]
            elif traced and _last_chunk(kind, message, trailers):
                # FastAPI's own telemetry ends the request's span once this chunk is sent.
                with guarded("response end"):
                    self.profiler._response_ending(request)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            with guarded("request end"):
                if not named:
                    _name(request, scope, *entry)
                request.close()


def _open(profiler: Profiler, scope: ASGIScope) -> Scope | None:
    try:
        method = scope.get("method", "GET")
        method = method if method in METHODS else "_OTHER"
        request = profiler.scope(f"{method} {UNMATCHED}", kind="http")
        request.method = method
        request.route = UNMATCHED
        if profiler._otel is not None:
            span = profiler._otel.request_span()
            if span is not None:
                request.attributes[SPAN] = span
        if profiler.settings.sql_route_tags:
            entry = (scope.get("root_path", ""), scope.get("app"))
            request.attributes[ROUTE_COMMENT] = _RouteComment(scope, *entry)
        return request.open()
    except Exception as exc:
        internal_error("request start", exc)
        return None


def _last_chunk(kind: str, message: Message, trailers: bool) -> bool:
    if kind == "http.response.body":
        return not message.get("more_body", False) and not trailers
    if kind == "http.response.trailers":
        return not message.get("more_trailers", False)
    return kind == "http.response.pathsend"


class _RouteComment:
    """The request's route tag for SQL (``sql_route_tags``), once the router has matched."""

    __slots__ = ("app", "comment", "root_path", "scope")

    def __init__(self, scope: ASGIScope, root_path: str, app: Any) -> None:
        self.scope, self.root_path, self.app = scope, root_path, app
        self.comment: str | None = None

    def __call__(self) -> str | None:
        if self.comment is None:
            route = route_template(self.scope, self.root_path, self.app)
            if route != UNMATCHED:
                self.comment = route_comment(route)
        return self.comment


def _timing(request: Scope) -> tuple[bytes, bytes]:
    value = f'db;dur={request.db_time * 1000:.1f};desc="{request.query_count} queries"'
    return b"server-timing", value.encode("ascii")


def _name(request: Scope, scope: ASGIScope, root_path: str, app: Any) -> None:
    route = route_template(scope, root_path, app)
    request.route = route
    request.name = f"{request.method} {route}"


def route_template(scope: ASGIScope, root_path: str = "", app: Any = None) -> str:
    """The route template the router matched for this request, or ``__unmatched__``.

    FastAPI keeps the full template of an included router (with its prefixes) in its own
    scope data; Starlette leaves the matched route in ``scope["route"]``. A mount's prefix is
    the part of ``root_path`` the routing added, templated by matching the app's mounts
    again; a mounted plain ASGI app (static files) is ``/prefix/{path}``.
    """
    from starlette.routing import Mount

    route = scope.get("route")
    mounted = scope.get("root_path", "")[len(root_path) :]
    if route is None and not mounted and app is not None:
        # FastAPI's router leaves no scope["route"] for the plain Starlette routes it holds
        # (app.add_route): find the route that matched, as the router did.
        route = _matched(app, {**scope, "root_path": root_path})
    if route is not None and not isinstance(route, Mount):
        methods = getattr(route, "methods", None)
        if methods and scope.get("method") not in methods:
            return UNMATCHED  # a 405: the path matched a route, the method did not
        path = None
        fastapi = scope.get("fastapi")
        context = fastapi.get(_FASTAPI_ROUTE_CONTEXT) if isinstance(fastapi, dict) else None
        if context is not None:
            starlette_route = getattr(context, "starlette_route", None)
            path = getattr(starlette_route, "path_format", None) or context.path_format
        if not path:
            path = getattr(route, "path_format", None) or getattr(route, "path", None)
        if not isinstance(path, str) or not path:
            return UNMATCHED
        return (_mounts(app, scope, root_path, mounted)[0] if mounted else "") + path
    # No route, or only a mount: either a plain ASGI app behind the mount served the
    # request, or the router of a mounted app found nothing.
    if not mounted:
        return UNMATCHED
    prefix, innermost = _mounts(app, scope, root_path, mounted)
    if innermost is None or getattr(innermost, "routes", None):
        return UNMATCHED
    return prefix + "/{path}"


def _matched(app: Any, scope: ASGIScope) -> Any:
    from starlette.routing import Match

    for candidate in getattr(getattr(app, "router", app), "routes", None) or ():
        if candidate.matches(scope)[0] is Match.FULL:
            return candidate
    return None


def _mounts(app: Any, scope: ASGIScope, root_path: str, mounted: str) -> tuple[str, Any]:
    """The templated prefix of the mounts the request went through (``/users/{id}``), and
    the innermost of them."""
    from starlette.routing import Match, Mount

    routes = getattr(getattr(app, "router", app), "routes", None)
    probe = {**scope, "root_path": root_path, "path": root_path + mounted + "/"}
    prefix, innermost = "", None
    while routes:
        for candidate in routes:
            if isinstance(candidate, Mount):
                match, child = candidate.matches(probe)
                if match is Match.FULL:
                    prefix += candidate.path
                    innermost = candidate
                    probe = {**probe, **child}
                    routes = getattr(candidate, "routes", None) or []
                    break
        else:
            break
    # Without the app's mounts, the raw prefix may hold values: never use it as a label.
    return prefix or "/{mount}", innermost
