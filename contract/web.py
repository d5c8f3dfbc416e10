"""The one web layer of the line console and the hub: sessions and roles, login required unless a route
opts out, origin check, CSRF tokens, security headers (the rate limit of logins is `contract.login_throttle`).

Frigate style: every route needs a logged-in user unless its endpoint is marked `@public` (the login page,
static files, the agents' token-authenticated API); a route that needs more than the lowest role says so
once, with `@requires("operator")`. `WebGuard` is Starlette middleware that runs before any route, so a
new route that forgets a check is behind the login, the role and the CSRF token all the same:

- a write (POST, PUT, PATCH, DELETE) whose `Origin` names another site, or that the browser marks
  `Sec-Fetch-Site: cross-site`, is refused with 403 on every route, public ones included (login CSRF);
- a request whose route is not public and that has no session gets 401 (JSON, for `/api/` paths and JSON
  clients) or a redirect to `/login?next=...`; where the app has no login (`Logins(anonymous=...)`,
  the console's localhost demo) each browser gets an anonymous session instead, and a `Host` that is
  not localhost is refused (421: no DNS rebinding onto a page without a login);
- a user whose role is below the route's `@requires` gets 403;
- every write to a route that is not public must carry the session's CSRF token in the header
  `X-CSRF-Token` or the form field `csrf`, else 403;
- every answer gets `SECURITY_HEADERS` (own scripts and styles only, no framing, no sniffing).

Sessions (`Logins`): a random token in an HttpOnly, SameSite=Strict cookie (Secure under TLS), kept by a
`SessionStore` (the one implementation: `contract.session_store.SqlSessionStore`, a table in the hub's
database or a file beside the console's journal, so a restart logs nobody out). The role is never kept
in the session: every request asks the app's user list (`accounts(name)` → `Account`) and compares the
account's stamp, so a user whose password or role changed, or who was removed, is logged out at the next
click. Logout is `Logins.logout`, POST only (CSRF applies).

Example:
    >>> import tempfile, pathlib
    >>> from starlette.applications import Starlette
    >>> from starlette.middleware import Middleware
    >>> from starlette.responses import PlainTextResponse, RedirectResponse
    >>> from starlette.routing import Route
    >>> from starlette.testclient import TestClient
    >>> from contract.session_store import SqlSessionStore
    >>> people = {"ana": Account("ana", "admin", "s1"), "vic": Account("vic", "viewer", "s2")}
    >>> store = SqlSessionStore.in_file(pathlib.Path(tempfile.mkdtemp()) / "s.sqlite", hours=1)
    >>> logins = Logins(store, people.get, roles=("viewer", "admin"), cookie="sid", secure=False)
    >>> @public
    ... def login(request):
    ...     response = RedirectResponse("/secret", status_code=303)
    ...     logins.start(response, people[request.query_params["as"]])
    ...     return response
    >>> @requires("admin")
    ... def secret(request): return PlainTextResponse(f"hello {request.state.user.user}")
    >>> routes = [Route("/login", login), Route("/secret", secret, methods=["GET", "POST"]),
    ...           Route("/logout", logins.logout, methods=["POST"])]
    >>> app = Starlette(routes=routes, middleware=[Middleware(WebGuard, routes=routes, logins=logins)])
    >>> c = TestClient(app, base_url="http://127.0.0.1", follow_redirects=False)
    >>> c.get("/secret").headers["location"]
    '/login?next=/secret'
    >>> c.get("/login?as=vic").status_code, c.get("/secret").status_code  # a viewer: not enough
    (303, 403)
    >>> c.get("/login?as=ana").status_code, c.get("/secret").text
    (303, 'hello ana')
    >>> token = logins.identify_token(c.cookies["sid"]).csrf
    >>> [c.post("/secret", headers={"x-csrf-token": t}).status_code for t in ("", token)]
    [403, 200]
    >>> c.post("/secret", headers={"x-csrf-token": token, "origin": "http://evil"}).status_code
    403
    >>> c.post("/logout", data={"csrf": token}).status_code, c.get("/secret").status_code
    (303, 303)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contract.session_store import StoredSession

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
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


# -- who may do what ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Account:
    """A user as the app's own user list holds them *now*: the role, and a stamp that changes whenever
    the password or the role does (`account_stamp`): a session made with another stamp no longer counts."""

    name: str
    role: str
    stamp: str


def account_stamp(password_hash: str, role: str) -> str:
    """The stamp of a user row: a new password (or salt) or a new role gives a new one."""
    return hashlib.sha256(f"{password_hash}\0{role}".encode()).hexdigest()[:32]


class Roles:
    """Roles in order, each including the rights of those before it.

        >>> roles = Roles(("viewer", "operator", "integrator"))
        >>> roles.allows("integrator", "operator"), roles.allows("viewer", "operator")
        (True, False)
        >>> roles.allows("viewer", "opertor")
        Traceback (most recent call last):
        ValueError: unknown role 'opertor'; the roles are viewer, operator, integrator
    """

    def __init__(self, order: Sequence[str]) -> None:
        self.order = tuple(order)
        self._rank = {role: i for i, role in enumerate(self.order)}

    def allows(self, role: str | None, needed: str | None) -> bool:
        if needed is None:
            return True
        if needed not in self._rank:  # a route's declaration with a typo: loud, never an open door
            raise ValueError(f"unknown role {needed!r}; the roles are {', '.join(self.order)}")
        return role in self._rank and self._rank[role] >= self._rank[needed]  # type: ignore[index]


@dataclass(frozen=True)
class Session:
    """A logged-in browser as a route sees it (`request.state.user`): the user, their role as stored
    now, the CSRF token its writes must carry."""

    token: str
    user: str
    role: str
    expires: float
    anonymous: bool = False
    roles: Roles = field(default=Roles(()), repr=False, compare=False)

    @property
    def csrf(self) -> str:
        """Derived from the secret cookie (one-way): unguessable for another site, no state to keep."""
        digest = hashlib.sha256(b"csrf\0" + self.token.encode()).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def allows(self, needed: str | None) -> bool:
        return self.roles.allows(self.role, needed)


class SessionStore(Protocol):
    """Where sessions live: `contract.session_store.SqlSessionStore` for both apps."""

    def create(self, user: str, stamp: str, anonymous: bool = False) -> StoredSession: ...

    def get(self, token: str | None) -> StoredSession | None: ...

    def end(self, token: str | None) -> None: ...


Accounts = Callable[[str], Account | None]


class Logins:
    """The sessions of one app: `identify` (who is asking, blocking), `start` (after a checked password),
    `logout` (the POST /logout endpoint). `accounts(name)` reads the app's user list; `anonymous` (an
    Account) means the app has no login: each browser gets a session of that account, on localhost only."""

    def __init__(
        self,
        store: SessionStore,
        accounts: Accounts,
        roles: Sequence[str],
        cookie: str,
        secure: bool,
        anonymous: Account | None = None,
        login_path: str = "/login",
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.roles = Roles(roles)
        self.cookie = cookie
        self.secure = secure
        self.anonymous = anonymous
        self.login_path = login_path

    def _session(self, stored: StoredSession, account: Account) -> Session:
        return Session(stored.token, account.name, account.role, stored.expires, stored.anonymous, self.roles)

    def identify_token(self, token: str | None) -> Session | None:
        """The session of this cookie value with the user's role as stored now, or None (none, ended,
        expired, the user removed or changed, an anonymous one where a login is required)."""
        stored = self.store.get(token)
        if stored is None:
            return None
        account = self.anonymous if stored.anonymous else self.accounts(stored.user)
        if account is None or account.name != stored.user:
            return None
        if not hmac.compare_digest(account.stamp.encode(), stored.stamp.encode()):
            return None
        return self._session(stored, account)

    def identify(self, request: Request) -> Session | None:
        return self.identify_token(request.cookies.get(self.cookie))

    def begin(self, account: Account, anonymous: bool = False) -> Session:
        return self._session(self.store.create(account.name, account.stamp, anonymous), account)

    def cookie_header(self, session: Session) -> tuple[bytes, bytes]:
        """The Set-Cookie header of a session (for answers the guard sends itself)."""
        response = Response()
        self.set_cookie(response, session)
        return next((k, v) for k, v in response.raw_headers if k == b"set-cookie")

    def set_cookie(self, response: Response, session: Session) -> None:
        set_session_cookie(response, self.cookie, session.token, self.secure, session.expires - time.time())

    def start(self, response: Response, account: Account) -> Session:
        """Log `account` in (its password checked already): a new session, its cookie on `response`."""
        session = self.begin(account)
        self.set_cookie(response, session)
        return session

    async def logout(self, request: Request) -> Response:
        """POST /logout of both apps (the guard checked the CSRF token): the session ends everywhere."""
        await run_in_threadpool(self.store.end, request.cookies.get(self.cookie))
        target = "/" if self.anonymous is not None else self.login_path
        response = RedirectResponse(target, status_code=303)
        response.delete_cookie(self.cookie, path="/")
        return response


def public(endpoint: Any) -> Any:
    """Mark a route's endpoint (function, bound method or ASGI app) as open without a login."""
    target = endpoint.__func__ if inspect.ismethod(endpoint) else endpoint
    target.public = True
    return endpoint


def is_public(endpoint: Any) -> bool:
    return bool(getattr(endpoint, "public", False))


RoleOf = str | Callable[[Request], str]


def requires(role: RoleOf) -> Callable[[Any], Any]:
    """Declare the role a route needs (a name, or `role(request)` for one set in the app's config);
    `WebGuard` refuses anybody below it with 403. Without it a route needs any logged-in user."""

    def mark(endpoint: Any) -> Any:
        target = endpoint.__func__ if inspect.ismethod(endpoint) else endpoint
        target.required_role = role
        return endpoint

    return mark


def required_role(endpoint: Any, request: Request) -> str | None:
    role = getattr(endpoint, "required_role", None)
    return role(request) if callable(role) else role


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


def write_routes(routes: Sequence[BaseRoute]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(the writes open without a login, the writes behind it and its CSRF check) as (method, path),
    path parameters filled with "1": what the CSRF tests walk.

        >>> from starlette.routing import Route
        >>> write_routes([Route("/a/{id:int}", lambda r: None, methods=["GET", "POST"]),
        ...               Route("/login", public(lambda r: None), methods=["POST"])])
        ([('POST', '/login')], [('POST', '/a/1')])
    """
    opted_out, guarded = [], []
    for route in routes:
        endpoint = getattr(route, "endpoint", None) or getattr(route, "app", None)
        path = re.sub(r"\{[^}]+\}", "1", str(getattr(route, "path", "")))
        for method in sorted(set(getattr(route, "methods", None) or ()) & UNSAFE_METHODS):
            (opted_out if is_public(endpoint) else guarded).append((method, path))
    return opted_out, guarded


def same_token(expected: str | None, sent: str | None) -> bool:
    """Constant-time comparison of a CSRF token; an empty or missing one never matches."""
    return bool(expected) and bool(sent) and hmac.compare_digest(str(expected).encode(), str(sent).encode())


def host_is_local(host_header: str | None) -> bool:
    """True when the request's `Host` names this machine (localhost, 127.0.0.1, [::1], any port)."""
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[: host.find("]") + 1]
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host in LOCAL_HOSTS


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


Refusal = Callable[[Request, int, str], Response]


class WebGuard:
    """ASGI middleware: see the module docstring. The session (or None on public routes) is kept in
    `request.state.user`. `on_refusal(request, status, message)` draws a refusal as the app's own page
    (plain text, or JSON for API clients, by default)."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[BaseRoute],
        logins: Logins,
        on_refusal: Refusal | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.logins = logins
        self.on_refusal = on_refusal or refusal
        self.headers = [(k.lower().encode(), v.encode()) for k, v in (headers or SECURITY_HEADERS).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra: list[tuple[bytes, bytes]] = []

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = (
                    list(message.get("headers", []))
                    + [(k, v) for k, v in self.headers if k not in present]
                    + extra
                )
            await send(message)

        request = Request(scope, receive)
        request.state.user = None
        answer, receive = await self._check(request, scope, receive, extra)
        if answer is not None:
            await answer(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _refuse(self, request: Request, status: int, message: str) -> Response:
        return self.on_refusal(request, status, message)

    async def _check(
        self, request: Request, scope: Scope, receive: Receive, extra: list[tuple[bytes, bytes]]
    ) -> tuple[Response | None, Receive]:
        logins = self.logins
        write = request.method in UNSAFE_METHODS
        if write:
            other = foreign_origin(request)
            if other:
                message = f"a request from {other} may not change anything here"
                return self._refuse(request, 403, message), receive
        if logins.anonymous is not None and not host_is_local(request.headers.get("host")):
            message = "no login here, so it answers only to localhost (Host header refused)"
            return self._refuse(request, 421, message), receive
        endpoint = route_endpoint(self.routes, scope)
        if is_public(endpoint):
            return None, receive
        user = await run_in_threadpool(logins.identify, request)
        fresh = False
        if user is None and logins.anonymous is not None:
            user, fresh = await run_in_threadpool(logins.begin, logins.anonymous, True), True
            extra.append(logins.cookie_header(user))
        request.state.user = user
        if user is None:
            if wants_json(request):
                return self._refuse(request, 401, f"log in first (POST {logins.login_path})"), receive
            target = f"{logins.login_path}?next={quote(request.url.path)}"
            return RedirectResponse(target, status_code=303), receive
        needed = required_role(endpoint, request)
        if not user.allows(needed):
            message = f"this needs the {needed} role; {user.user} is {user.role}"
            return self._refuse(request, 403, message), receive
        if not write:
            return None, receive
        body = await request.body()
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            sent = (parse_qs(body.decode("latin-1")).get(CSRF_FIELD) or [None])[0]
        if fresh or not same_token(user.csrf, sent):
            message = "missing or wrong CSRF token: reload the page and try again"
            return self._refuse(request, 403, message), receive
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
