"""The hub's HTTP app: the agents' API (`/api/v1/...`, per-agent token) and the dashboard (logins).

`contract.web.WebGuard` (the console's too) stands before every route: a login unless the route is
`public` (login page, static files, health, the agents' API with its own token), the role a route
declares, CSRF on every write, foreign origins refused, security headers."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from contract.web import WebGuard, public
from hub.api import AgentApi
from hub.commands import Commands
from hub.config import HubConfig
from hub.registry import Registry
from hub.rollout import Rollouts
from hub.store import HubStore
from hub.web import Dashboard


def build_app(config: HubConfig, store: HubStore) -> Starlette:
    registry = Registry(
        store.db,
        late_after_heartbeats=config.agents.late_after_heartbeats,
        offline_after_s=config.agents.offline_after_s,
    )
    rollouts = Rollouts(store.db, config.data_dir)
    commands = Commands(store.db, config.data_dir)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "store": store.db.kind})

    agent_api = AgentApi(store, registry, rollouts, commands).routes()
    for route in agent_api:  # agents authenticate with their bearer token, never a browser session
        public(route.endpoint)
    dashboard = Dashboard(config, store, registry, rollouts, commands)
    routes = [Route("/healthz", public(healthz)), *agent_api, *dashboard.routes()]
    guard = Middleware(WebGuard, routes=routes, logins=dashboard.logins, on_refusal=dashboard.refusal_page)
    app = Starlette(routes=routes, middleware=[guard])
    app.state.config = config
    app.state.store = store
    return app
