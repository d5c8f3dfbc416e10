"""The glue every console route uses: the role a route needs (one declaration, checked by
`contract.web.WebGuard` with the login and the CSRF token), errors in plain words, templates."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.templating import Jinja2Templates

from contract.web import RoleOf, public, requires, wants_json

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
        {**console.page_context(request, getattr(request.state, "user", None)), "error": exc},
        status_code=exc.status,
    )


def refusal_page(request: Request, status: int, message: str) -> Response:
    """How the guard's refusals look on the console: its own error page (JSON for API clients)."""
    return error_response(request, HttpError(status, message))


Endpoint = Callable[..., Any]


def access(needed: RoleOf | None) -> Callable[[Endpoint], Callable[[Request], Awaitable[Response]]]:
    """Wrap a route: the role it needs (`contract.web.requires`: a role name, a function of the request
    for one the site file sets, or None for a page open to all, `contract.web.public`), HttpError turned
    into an answer, sync routes run in a worker thread. The login, the role and the CSRF token of every
    write are checked by `contract.web.WebGuard` before the route runs (see routes.build_app); the session
    is `request.state.user`."""

    def wrap(fn: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        is_async = inspect.iscoroutinefunction(fn)

        @functools.wraps(fn)
        async def endpoint(request: Request) -> Response:
            try:
                if is_async:
                    return await fn(request)
                return await run_in_threadpool(fn, request)
            except HttpError as exc:
                return error_response(request, exc)

        return public(endpoint) if needed is None else requires(needed)(endpoint)

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
