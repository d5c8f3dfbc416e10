"""The one web layer of the line console and the hub: login required unless a route opts out, origin check,
CSRF tokens, security headers (the rate limit of logins is `contract.login_throttle`).

Frigate style: every route needs a logged-in user unless its endpoint is marked `@public` (the login page,
static files, the agents' token-authenticated API). `WebGuard` is Starlette middleware that runs before any
route, so a new route that forgets its check is behind the login all the same:

- a request whose route is not public and that has no user (`identify(request)` returns None) gets 401
  (JSON, for `/api/` paths and JSON clients) or a redirect to `/login?next=...`;
- a write (POST, PUT, PATCH, DELETE) whose `Origin` names another site, or that the browser marks
  `Sec-Fetch-Site: cross-site`, is refused with 403 on every route, public ones included (login CSRF);
- with `csrf_of`, a write to a route that is not public must carry the token `csrf_of(request, user)` in
  the header `X-CSRF-Token` or the form field `csrf`, else 403;
- every answer gets `SECURITY_HEADERS` (own scripts and styles only, no framing, no sniffing).

Example:
    >>> from starlette.applications import Starlette
    >>> from starlette.middleware import Middleware
    >>> from starlette.responses import PlainTextResponse
    >>> from starlette.routing import Route
    >>> from starlette.testclient import TestClient
    >>> @public
    ... def hello(request): return PlainTextResponse("open to all")
    >>> def secret(request): return PlainTextResponse(f"hello {request.state.user}")
    >>> routes = [Route("/hello", hello), Route("/secret", secret, methods=["GET", "POST"])]
    >>> who = lambda request: request.headers.get("x-user")
    >>> app = Starlette(routes=routes, middleware=[
    ...     Middleware(WebGuard, routes=routes, identify=who, csrf_of=lambda request, user: "t0ken")])
    >>> c = TestClient(app, follow_redirects=False)
    >>> c.get("/hello").text, c.get("/secret").headers["location"]
    ('open to all', '/login?next=/secret')
    >>> c.get("/secret", headers={"x-user": "ana"}).text
    'hello ana'
    >>> [c.post("/secret", headers={"x-user": "ana", "x-csrf-token": t}).status_code for t in ("", "t0ken")]
    [403, 200]
    >>> c.post("/secret", headers={"x-user": "ana", "x-csrf-token": "t0ken", "origin": "http://evil"}).status_code
    403
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = {
    # own scripts and styles only; images from this origin (and canvases' data URLs)
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"


def public(endpoint: Any) -> Any:
    """Mark a route's endpoint (function, bound method or ASGI app) as open without a login."""
    target = endpoint.__func__ if inspect.ismethod(endpoint) else endpoint
    target.public = True
    return endpoint


def is_public(endpoint: Any) -> bool:
    return bool(getattr(endpoint, "public", False))


def route_endpoint(routes: Sequence[BaseRoute], scope: Scope) -> Any:
    """The endpoint (or mounted app) that serves `scope`, or None when no route takes it fully."""
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return getattr(route, "endpoint", None) or getattr(route, "app", None)
    return None


def set_session_cookie(response: Response, name: str, value: str, secure: bool, max_age_s: float) -> None:
    """A session cookie as both apps set it: HttpOnly (no script reads it), SameSite=Strict (no other
    site's request carries it), Secure under TLS."""
    response.set_cookie(
        name, value, max_age=int(max_age_s), httponly=True, samesite="strict", secure=secure, path="/"
    )


def split_routes(routes: Sequence[BaseRoute]) -> tuple[list[str], list[tuple[str, str]]]:
    """(the paths that opted out of the login, every (method, path) behind it), path parameters filled
    with "1": what the security tests knock on, so a new route is checked without being listed.

        >>> from starlette.routing import Route
        >>> split_routes([Route("/a/{id:int}", lambda r: None, methods=["POST"]),
        ...               Route("/login", public(lambda r: None))])
        (['/login'], [('POST', '/a/1')])
    """
    opted_out, guarded = [], []
    for route in routes:
        endpoint = getattr(route, "endpoint", None) or getattr(route, "app", None)
        path = str(getattr(route, "path", ""))
        if is_public(endpoint):
            opted_out.append(path)
            continue
        methods = sorted((getattr(route, "methods", None) or {"GET"}) - {"HEAD"})
        guarded += [(method, re.sub(r"\{[^}]+\}", "1", path)) for method in methods]
    return opted_out, guarded


def same_token(expected: str | None, sent: str | None) -> bool:
    """Constant-time comparison of a CSRF token; an empty or missing one never matches."""
    return bool(expected) and bool(sent) and hmac.compare_digest(str(expected).encode(), str(sent).encode())


def signed_token(secret: bytes, value: str) -> str:
    """A token bound to `value` (e.g. the session cookie) that only the holder of `secret` can make:
    a CSRF token that needs no server-side state.

        >>> key = b"k" * 32
        >>> signed_token(key, "cookie") == signed_token(key, "cookie") != signed_token(key, "other")
        True
    """
    digest = hmac.new(secret, b"csrf\0" + value.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def foreign_origin(request: Request) -> str | None:
    """The other site a write comes from (Origin not this host, or Sec-Fetch-Site cross-site), or None."""
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        return origin
    if request.headers.get("sec-fetch-site") == "cross-site":
        return origin or "another site"
    return None


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", "")


def refusal(request: Request, status: int, message: str) -> Response:
    if wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    return PlainTextResponse(message, status_code=status)


Identify = Callable[[Request], Any]
CsrfOf = Callable[[Request, Any], str | None]


class WebGuard:
    """ASGI middleware: see the module docstring. `identify(request)` (sync functions run in a worker
    thread) returns the user or None; it is kept in `request.state.user`."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[BaseRoute],
        identify: Identify,
        csrf_of: CsrfOf | None = None,
        login_path: str = "/login",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.identify = identify
        self.csrf_of = csrf_of
        self.login_path = login_path
        self.headers = [(k.lower().encode(), v.encode()) for k, v in (headers or SECURITY_HEADERS).items()]

    async def _user(self, request: Request) -> Any:
        if inspect.iscoroutinefunction(self.identify):
            return await self.identify(request)
        return await run_in_threadpool(self.identify, request)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in self.headers if k not in present
                ]
            await send(message)

        request = Request(scope, receive)
        answer, receive = await self._check(request, scope, receive)
        if answer is not None:
            await answer(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    async def _check(
        self, request: Request, scope: Scope, receive: Receive
    ) -> tuple[Response | None, Receive]:
        write = request.method in UNSAFE_METHODS
        if write:
            other = foreign_origin(request)
            if other:
                return refusal(request, 403, f"a request from {other} may not change anything here"), receive
        if is_public(route_endpoint(self.routes, scope)):
            return None, receive
        user = await self._user(request)
        request.state.user = user
        if user is None:
            if wants_json(request):
                return refusal(request, 401, f"log in first (POST {self.login_path})"), receive
            target = f"{self.login_path}?next={quote(request.url.path)}"
            return RedirectResponse(target, status_code=303), receive
        if not write or self.csrf_of is None:
            return None, receive
        body = await request.body()
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            sent = (parse_qs(body.decode("latin-1")).get(CSRF_FIELD) or [None])[0]
        if not same_token(self.csrf_of(request, user), sent):
            message = "missing or wrong CSRF token: reload the page and try again"
            return refusal(request, 403, message), receive
        return None, _replay(body, receive)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body the guard already read, then the client's own messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
