"""The programme dashboard: server-rendered pages (Jinja2), inline SVG charts, no build step, nothing
from the internet. Logins with roles (`hub.auth`) through the shared web layer (`contract.web`, the
console's too): every page needs a login (`WebGuard`, see hub.app: only `public` routes opt out), every
POST carries the session's CSRF token, logout is a POST (`Logins.logout`); promoting or rolling back a
rollout is declared `requires("ml")`. Charts escape their text with markupsafe.

Pages: `/` (all companies), `/company/<name>`, `/line/<site>/<line>` (30-day and 24-hour charts, NG by
class, drift, model history, recent NG images fetched from the agent on demand), `/rollouts`.

Every request reads the user's account from the store (`Users.account`): a removed or changed user is
logged out at once. Failed logins slow down the address they come from, never the account
(`contract.login_throttle`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import escape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from contract.login_throttle import LoginRefused, LoginThrottle, is_loopback
from contract.session_store import SqlSessionStore
from contract.web import Logins, public, refusal, requires
from hub.auth import ROLES, Users
from hub.commands import Commands
from hub.config import HubConfig
from hub.overview import Overview
from hub.registry import Registry
from hub.rollout import RolloutError, Rollouts
from hub.store import HubStore

HERE = Path(__file__).parent
COOKIE = "hub_session"
log = logging.getLogger(__name__)


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f} %"


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _when(ts: float | None) -> str:
    return "–" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z"


class Dashboard:
    def __init__(
        self, config: HubConfig, store: HubStore, registry: Registry, rollouts: Rollouts, commands: Commands
    ) -> None:
        self.config = config
        self.store = store
        self.registry = registry
        self.rollouts = rollouts
        self.commands = commands
        self.users = Users(store.db)
        # in the hub's database (a migration makes the table): every hub process on it shares them
        self.session_store = SqlSessionStore(store.db, config.http.session_hours)
        self.logins = Logins(
            self.session_store, self.users.account, ROLES, COOKIE, secure=config.http.secure_cookies
        )
        self.throttle = LoginThrottle(
            free_attempts=config.http.login_attempts, max_delay_s=config.http.login_max_delay_s
        )
        if not config.http.secure_cookies and not is_loopback(config.http.host):
            log.warning(
                "hub dashboard on %s:%s takes logins over plain HTTP: passwords and session cookies cross "
                "the network in clear; put it behind an HTTPS reverse proxy and set http.secure_cookies",
                config.http.host,
                config.http.port,
            )
        self.overview = Overview(store.db, registry, config.drift)
        self.images_dir = Path(config.data_dir) / "images"
        env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape())
        env.filters.update(pct=_pct, ago=_ago, when=_when, q=lambda s: quote(str(s), safe=""))
        self.env = env

    def routes(self) -> list[Route | Mount]:
        return [
            Route("/login", public(self.login), methods=["GET", "POST"]),
            Route("/logout", self.logins.logout, methods=["POST"]),
            Route("/", self.programme),
            Route("/company/{name}", self.company),
            Route("/line/{site}/{line}", self.line),
            Route("/image/{site}/{line}/{result_id}", self.image),
            Route("/rollouts", self.rollouts_page, methods=["GET"]),
            Route("/rollouts/{id:int}/{action}", requires("ml")(self.rollout_action), methods=["POST"]),
            Mount("/static", public(StaticFiles(directory=HERE / "static")), name="static"),
        ]

    def refusal_page(self, request: Request, status: int, message: str) -> Response:
        """How the guard's refusals (no role, no CSRF token, another site) look on the dashboard."""
        if request.url.path.startswith("/api/"):
            return refusal(request, status, message)
        return self._render(request, "message.html", status=status, title="Not allowed", message=message)

    def _render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        user = getattr(request.state, "user", None)
        html = self.env.get_template(template).render(
            user=user, csrf=user.csrf if user else None, now=time.time(), **context
        )
        return HTMLResponse(html, status_code=status)

    async def login(self, request: Request) -> Response:
        nxt = request.query_params.get("next", "/")
        if not nxt.startswith("/") or nxt.startswith("//"):
            nxt = "/"
        if request.method == "GET":
            return self._render(request, "login.html", next=nxt, error=None)
        client = request.client.host if request.client else "?"
        form = await request.form()
        name, password = str(form.get("user", "")), str(form.get("password", ""))
        try:  # while the address waits, refused without looking at the password
            await run_in_threadpool(self.throttle.attempt, client, lambda: self.users.check(name, password))
        except LoginRefused as exc:
            response = self._render(
                request, "login.html", status=429 if exc.retry_after_s else 401, next=nxt, error=str(exc)
            )
            if exc.retry_after_s:
                response.headers["Retry-After"] = str(exc.retry_after_s)
            return response
        account = await run_in_threadpool(self.users.account, name)
        response = RedirectResponse(nxt, status_code=303)
        if account is not None:  # None: removed between the password check and now
            await run_in_threadpool(self.logins.start, response, account)
        return response

    # -- pages ----------------------------------------------------------------------------------
    async def programme(self, request: Request) -> Response:
        data = await run_in_threadpool(self.overview.programme)
        agents = await run_in_threadpool(self.registry.agents)
        return self._render(request, "programme.html", data=data, agents=agents)

    async def company(self, request: Request) -> Response:
        name = request.path_params["name"]
        rows = await run_in_threadpool(self.overview.company, name)
        if not rows:
            return self._render(
                request,
                "message.html",
                status=404,
                title="Unknown company",
                message=f"No lines registered for {name!r}.",
            )
        return self._render(request, "company.html", name=name, lines=rows)

    async def line(self, request: Request) -> Response:
        site, line = request.path_params["site"], request.path_params["line"]

        def gather() -> dict[str, Any]:
            info = self.registry.line(site, line)
            stats = self.overview.line_stats(only=(site, line)).get((site, line))
            return {
                "info": info,
                "stats": stats,
                "days": self.overview.line_days(site, line),
                "hours": self.overview.line_hours(site, line),
                "recent": self.overview.recent_ng(site, line),
                "history": self.rollouts.history(site, line)[-15:][::-1],
            }

        data = await run_in_threadpool(gather)
        if data["info"] is None and data["stats"] is None:
            return self._render(
                request,
                "message.html",
                status=404,
                title="Unknown line",
                message=f"No line {site}/{line} on this hub.",
            )
        for r in data["recent"]:
            r["classes"] = json.loads(r["classes"] or "{}")
        return self._render(
            request,
            "line.html",
            site=site,
            line=line,
            **data,
            days_chart=_bars(data["days"], "parts", "ng", "date"),
            hours_chart=_bars(data["hours"], "parts", "ng", "hour"),
        )

    async def image(self, request: Request) -> Response:
        """An NG image, fetched from the agent on demand (cached here); the agent answers its long poll."""
        site, line, result_id = (request.path_params[k] for k in ("site", "line", "result_id"))
        cached = self.images_dir / f"{result_id}.img"
        if cached.is_file():
            return FileResponse(
                cached,
                media_type=(
                    cached.with_suffix(".type").read_text()
                    if cached.with_suffix(".type").exists()
                    else "image/jpeg"
                ),
            )
        rows = await run_in_threadpool(
            self.store.db.query,
            "SELECT seq, ts FROM results WHERE result_id = ? AND site = ? AND line = ?",
            (result_id, site, line),
        )
        agent_id = await run_in_threadpool(self.registry.agent_of_line, site, line)
        if not rows or agent_id is None:
            return _placeholder("no such result", 404)
        seq, ts = rows[0]
        command_id = await run_in_threadpool(
            self.commands.add,
            agent_id,
            "image",
            {
                "line": line,
                "seq": int(seq),
                "result_id": result_id,
                "timestamp": time.strftime("%Y-%m-%d", time.gmtime(ts)),
            },
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            c = await run_in_threadpool(self.commands.get, command_id)
            if c and c["status"] in ("done", "failed"):
                break
            await asyncio.sleep(0.2)
        else:
            return _placeholder("agent did not answer", 504)
        if c["status"] == "failed":
            return _placeholder((c["result"] or {}).get("error") or "agent could not send it", 404)
        self.images_dir.mkdir(parents=True, exist_ok=True)
        src = Path(c["result"]["file"])
        src.replace(cached)
        cached.with_suffix(".type").write_text(c["result"]["content_type"])
        return FileResponse(cached, media_type=c["result"]["content_type"])

    async def rollouts_page(self, request: Request) -> Response:
        def gather() -> list[dict[str, Any]]:
            rows = self.rollouts.list()
            for r in rows:
                r["targets"] = json.loads(r["targets"])
                r["lines"] = self.rollouts.line_status(r["id"])
                r["canary_failed"] = bool(r["canary"]) and r["lines"][r["canary"]]["status"] == "failed"
            return rows

        rows = await run_in_threadpool(gather)
        return self._render(request, "rollouts.html", rollouts=rows, message=request.query_params.get("msg"))

    async def rollout_action(self, request: Request) -> Response:
        """Promote or roll back (the route needs `ml`, see `routes`)."""
        rollout_id, action = int(request.path_params["id"]), request.path_params["action"]
        try:
            if action == "promote":
                lines = await run_in_threadpool(self.rollouts.promote, rollout_id)
                msg = f"rollout {rollout_id} promoted to {', '.join(lines) or 'no further lines'}"
            elif action == "rollback":
                back = await run_in_threadpool(self.rollouts.rollback, rollout_id)
                msg = f"rollout {rollout_id} rolled back on {', '.join(t for t, _ in back) or 'no line'}"
            else:
                return Response(status_code=404)
        except RolloutError as exc:
            msg = f"refused: {exc}"
        return RedirectResponse(f"/rollouts?msg={quote(msg)}", status_code=303)


def _placeholder(text: str, status: int) -> Response:
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="320" height="200"><rect width="100%" height="100%" '
        'fill="#eee"/><text x="50%" y="50%" font-size="16" text-anchor="middle" font-family="sans-serif">'
        f"{escape(text[:60])}</text></svg>"
    )
    return Response(svg, status_code=status, media_type="image/svg+xml")


def _bars(
    points: list[dict[str, Any]], total: str, bad: str, label: str, width: int = 900, height: int = 220
) -> str:
    """An inline SVG bar chart: total per bucket (grey) with its NG part (red), labels under each bar."""
    n = max(len(points), 1)
    top = max([p[total] for p in points] + [1])
    bar_w = width / n
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height + 40}" role="img" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, p in enumerate(points):
        x = i * bar_w
        h_all = height * p[total] / top
        h_bad = height * p[bad] / top
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{height - h_all:.1f}" width="{bar_w - 2:.1f}" height="{h_all:.1f}" '
            f'class="ok"><title>{escape(p[label])}: {p[total]} parts, {p[bad]} NG</title></rect>'
        )
        if h_bad > 0:
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{height - h_bad:.1f}" width="{bar_w - 2:.1f}" '
                f'height="{h_bad:.1f}" class="ng"/>'
            )
        if i % max(1, n // 10) == 0:
            # centred under its bar, except at the edges, where a centred label would stick out of the chart
            tx, anchor = x + bar_w / 2, "middle"
            if i == 0:
                tx, anchor = x + 1, "start"
            elif i == n - 1:
                tx, anchor = x + bar_w - 1, "end"
            parts.append(
                f'<text x="{tx:.1f}" y="{height + 24}" text-anchor="{anchor}">{escape(p[label])}</text>'
            )
    parts.append(f'<text x="4" y="16" class="axis">{top} parts</text></svg>')
    return "".join(parts)
