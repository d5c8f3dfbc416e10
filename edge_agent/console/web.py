"""The glue every console route uses: who is asking (session, role, CSRF), errors in plain words,
security headers, templates."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from contract.web import public, wants_json
from contract.web import set_session_cookie as shared_set_cookie
from edge_agent.console.auth import COOKIE, Session, host_is_local
from edge_agent.console.settings import Role

if TYPE_CHECKING:
    from edge_agent.console.server import Console

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

class HttpError(Exception):
    """An answer in plain words: raised anywhere in a route, turned into JSON or a page."""

    def __init__(self, status: int, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []


def console_of(request: Request) -> Console:
    return request.app.state.console


def error_response(request: Request, exc: HttpError) -> Response:
    if wants_json(request):
        body: dict[str, Any] = {"error": exc.message}
        if exc.details:
            body["details"] = exc.details
        return JSONResponse(body, status_code=exc.status)
    console = console_of(request)
    return TEMPLATES.TemplateResponse(
        request,
        "error.html",
        {**console.page_context(request, getattr(request.state, "session", None)), "error": exc},
        status_code=exc.status,
    )


def set_session_cookie(response: Response, session: Session, secure: bool, max_age_s: float) -> None:
    shared_set_cookie(response, COOKIE, session.token, secure, max_age_s)


Endpoint = Callable[..., Any]


def access(
    needed: Role | None, write: bool = False
) -> Callable[[Endpoint], Callable[[Request], Awaitable[Response]]]:
    """Wrap a route: find the session, require role `needed` (None: anybody, e.g. the login page: the
    route is then `contract.web.public`), require the CSRF token on writes, turn HttpError into an answer.
    Sync routes run in a worker thread. `contract.web.WebGuard` stands in front of every route (login
    unless public, foreign origins refused, security headers), so a route without `access` is closed."""

    def wrap(fn: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        is_async = inspect.iscoroutinefunction(fn)

        @functools.wraps(fn)
        async def endpoint(request: Request) -> Response:
            console = console_of(request)
            auth = console.auth
            new_session = None
            try:
                if not auth.login_required and not host_is_local(request.headers.get("host")):
                    raise HttpError(
                        421, "this console has no login and answers only to localhost (Host header refused)"
                    )
                session = auth.session(request.cookies.get(COOKIE))
                if session is None and not auth.login_required:
                    session = new_session = auth.anonymous_session()
                request.state.session = session
                if needed is not None:
                    if session is None:
                        if wants_json(request):
                            raise HttpError(401, "log in first (POST /login)")
                        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
                    if not session.allows(needed):
                        raise HttpError(
                            403, f"this needs the {needed} role; {session.user} is {session.role}"
                        )
                if write:
                    sent = request.headers.get("x-csrf-token")
                    if sent is None and request.headers.get("content-type", "").startswith(
                        ("application/x-www-form-urlencoded", "multipart/form-data")
                    ):
                        sent = (await request.form()).get("csrf")
                    if session is None or new_session is not None or not auth.csrf_ok(session, sent):
                        raise HttpError(403, "missing or wrong CSRF token: reload the page and try again")
                if is_async:
                    response = await fn(request)
                else:
                    response = await run_in_threadpool(fn, request)
            except HttpError as exc:
                response = error_response(request, exc)
            if new_session is not None:
                set_session_cookie(response, new_session, console.tls, console.config.session_hours * 3600)
            return response

        return public(endpoint) if needed is None else endpoint

    return wrap


def int_param(value: str | None, name: str, lo: int = 0, hi: int = 2**62) -> int | None:
    if value in (None, ""):
        return None
    try:
        n = int(value)
    except ValueError:
        raise HttpError(400, f"{name}: {value!r} is not a whole number") from None
    if not lo <= n <= hi:
        raise HttpError(400, f"{name}: {n} is outside {lo}..{hi}")
    return n


def not_found(what: str) -> HttpError:
    return HttpError(404, what)


def text(message: str, status: int = 200) -> Response:
    return PlainTextResponse(message, status_code=status)
