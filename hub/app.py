"""The hub's HTTP app: the agents' API (`/api/v1/...`, per-agent token) and the dashboard (logins)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hub.config import HubConfig
from hub.store import HubStore


def build_app(config: HubConfig, store: HubStore) -> Starlette:
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "store": store.db.kind})

    routes = [Route("/healthz", healthz)]
    app = Starlette(routes=routes)
    app.state.config = config
    app.state.store = store
    return app
