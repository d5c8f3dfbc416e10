"""The agents' HTTP API (`/api/v1/...`): every call carries the agent's token (`Authorization: Bearer`).

- `POST /api/v1/register`, `POST /api/v1/heartbeat`: the agent and its lines (state, model, recipe);
  the answer names the model each line should run (`desired`).
- `GET /api/v1/models/<sha256>`: a model file assigned to one of the agent's lines.
- `POST /api/v1/models/report`: `{line, rollout_id, sha256, status: applied/failed/reverted, error,
  applied_at}` (`applied_at`: the agent's clock when the line switched; the canary gate counts from it).
- `GET /api/v1/commands?wait=20`: long poll for work (send an archived image, collect a dataset).
- `POST /api/v1/commands/<id>/result`: the answer, a file in the body (`X-Status: failed` + `X-Error`
  when it could not).
- `POST /api/v1/reviews`: review events from the agent's console (`{events: [...]}`).

The hub never connects to an agent: agents connect out, and commands wait for their long poll.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from hub.commands import Commands
from hub.registry import Registry, RegistryError
from hub.rollout import RolloutError, Rollouts
from hub.store import HubStore

MAX_UPLOAD = 512 * 1024 * 1024


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message}, status_code=status)


class AgentApi:
    def __init__(self, store: HubStore, registry: Registry, rollouts: Rollouts, commands: Commands) -> None:
        self.store = store
        self.registry = registry
        self.rollouts = rollouts
        self.commands = commands

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/register", self.register, methods=["POST"]),
            Route("/api/v1/heartbeat", self.heartbeat, methods=["POST"]),
            Route("/api/v1/models/report", self.report, methods=["POST"]),
            Route("/api/v1/models/{sha}", self.model_file, methods=["GET"]),
            Route("/api/v1/commands", self.poll_commands, methods=["GET"]),
            Route("/api/v1/commands/{id:int}/result", self.command_result, methods=["POST"]),
            Route("/api/v1/reviews", self.reviews, methods=["POST"]),
        ]

    def _agent(self, request: Request) -> dict[str, Any] | None:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        return self.registry.authenticate(token)

    async def _json(self, request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError as exc:
            raise RegistryError(f"the body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise RegistryError("the body must be a JSON object")
        return body

    async def register(self, request: Request) -> Response:
        return await self._heartbeat(request, registering=True)

    async def heartbeat(self, request: Request) -> Response:
        return await self._heartbeat(request, registering=False)

    async def _heartbeat(self, request: Request, *, registering: bool) -> Response:
        agent = await run_in_threadpool(self._agent, request)
        if agent is None:
            return _error(401, "unknown or missing agent token")
        try:
            payload = await self._json(request)
            row = await run_in_threadpool(
                self.registry.heartbeat, agent["agent_id"], payload, registering=registering
            )
            desired = await run_in_threadpool(self.rollouts.desired_for_site, row["site"])
            pending = await run_in_threadpool(self.commands.pending_count, agent["agent_id"])
        except RegistryError as exc:
            return _error(400, str(exc))
        return JSONResponse(
            {"ok": True, **row, "desired": desired, "commands_pending": pending, "server_time": time.time()}
        )

    async def model_file(self, request: Request) -> Response:
        agent = await run_in_threadpool(self._agent, request)
        if agent is None:
            return _error(401, "unknown or missing agent token")
        sha = request.path_params["sha"]
        desired = await run_in_threadpool(self.rollouts.desired_for_site, agent["site"] or "")
        if sha not in {d["sha256"] for d in desired.values()}:
            return _error(404, f"model {sha[:16]} is not assigned to any line of site {agent['site']}")
        path = await run_in_threadpool(self.rollouts.model_file, sha)
        if path is None or not path.is_file():
            return _error(404, f"model file {sha[:16]} is missing on the hub")
        return FileResponse(path, media_type="application/octet-stream")

    async def report(self, request: Request) -> Response:
        agent = await run_in_threadpool(self._agent, request)
        if agent is None:
            return _error(401, "unknown or missing agent token")
        try:
            body = await self._json(request)
            await run_in_threadpool(
                self.rollouts.report,
                agent["site"],
                str(body["line"]),
                body.get("rollout_id"),
                body.get("sha256"),
                str(body["status"]),
                body.get("error"),
                body.get("applied_at"),
            )
        except (RegistryError, RolloutError, KeyError, ValueError, TypeError) as exc:
            return _error(400, f"bad report: {exc}")
        return JSONResponse({"ok": True})

    async def poll_commands(self, request: Request) -> Response:
        agent = await run_in_threadpool(self._agent, request)
        if agent is None:
            return _error(401, "unknown or missing agent token")
        try:
            wait = min(60.0, max(0.0, float(request.query_params.get("wait", "0"))))
        except ValueError:
            return _error(400, "wait must be a number of seconds")
        deadline = time.monotonic() + wait
        while True:
            taken = await run_in_threadpool(self.commands.take, agent["agent_id"])
            if taken or time.monotonic() >= deadline:
                return JSONResponse({"commands": taken})
            await asyncio.sleep(0.2)

    async def command_result(self, request: Request) -> Response:
        agent = await run_in_threadpool(self._agent, request)
        if agent is None:
            return _error(401, "unknown or missing agent token")
        command_id = int(request.path_params["id"])
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_UPLOAD:
                return _error(413, f"the answer is larger than {MAX_UPLOAD // 2**20} MiB")
        status = request.headers.get("x-status", "done")
        try:
            await run_in_threadpool(
                self.commands.finish,
                agent["agent_id"],
                command_id,
                status,
                body,
                request.headers.get("content-type", "application/octet-stream"),
                request.headers.get("x-error"),
            )
        except KeyError as exc:
            return _error(404, str(exc))
        return JSONResponse({"ok": True})

    async def reviews(self, request: Request) -> Response:
        agent = await run_in_threadpool(self._agent, request)
        if agent is None:
            return _error(401, "unknown or missing agent token")
        try:
            body = await self._json(request)
            events = body.get("events")
            if not isinstance(events, list):
                raise RegistryError("'events' must be a list")
            n = await run_in_threadpool(self.store.apply_reviews, agent["site"], events)
        except (RegistryError, ValueError, KeyError) as exc:
            return _error(400, f"bad review events: {exc}")
        return JSONResponse({"ok": True, "applied": n})
