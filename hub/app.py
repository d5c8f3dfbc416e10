"""The hub's HTTP app: the agents' API (`/api/v1/...`, per-agent token) and the dashboard (logins)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

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

    routes = [
        Route("/healthz", healthz),
        *AgentApi(store, registry, rollouts, commands).routes(),
        *Dashboard(config, store, registry, rollouts, commands).routes(),
    ]
    app = Starlette(routes=routes)
    app.state.config = config
    app.state.store = store
    return app
