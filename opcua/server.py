"""The OPC UA server of the agent: one Machine Vision `VisionSystem` per line.

`VisionServer` runs inside an asyncio loop (tests may drive it directly); `ServerThread` gives it its
own thread and event loop so that nothing the server does (its ~2 s `Server.init()`, a slow client,
SQLite reads for GetResultListFiltered) can ever stall inference. The agent hands results over with
`submit_result(body)`, which is thread-safe and never blocks: bodies go into an unbounded queue and
the loop is woken with `call_soon_threadsafe`. Nothing is dropped from what the server publishes,
and the OPC UA result history (GetResultById, GetResultListFiltered) is read from the journal.

Example (demo profile, one line object that satisfies `opcua.backend.LineBackend`)::

    server = ServerThread(OpcUaServerConfig(security="none", endpoint="opc.tcp://127.0.0.1:4840/"),
                          lines={"line1": line}, store=store)
    server.start()            # returns once clients can connect
    server.submit_result(result_body)
    server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from asyncua import Server, ua
from asyncua.common.callback import CallbackType

from opcua import model
from opcua.backend import LineBackend, ResultBody, ResultStore
from opcua.config import MACHINE_VISION_NS, OpcUaServerConfig
from opcua.security import (
    SECURITY_POLICY_TYPES,
    DemoUserManager,
    PasswordUserManager,
    RoleRuleset,
    TrustFolderValidator,
)

logger = logging.getLogger(__name__)

# Error out-argument values (OPC 40100-1: < 0 = application-specific).
ERR_NOT_READY = -1  # the line is not in a state that accepts this call
ERR_UNKNOWN_RECIPE = -2
ERR_WRONG_MODE = -3  # e.g. StartContinuous on a triggered line, StartSingleJob on a free-run line
ERR_BACKEND = -4  # the line refused (see the agent log)
ERR_NOT_FOUND = -5  # GetResultById: no such result (ResultState of the returned value is 0)

DEMO_BANNER = (
    "\n" + "!" * 78 + "\n"
    "!!  OPC UA SERVER RUNNING WITH `security: none`: NO ENCRYPTION, NO AUTHENTICATION.        !!\n"
    "!!  Anyone on the network can trigger inspections and change recipes. Demo benches only. !!\n" + "!" * 78
)


def vision_states(line: LineBackend, *, halted: bool, busy: bool) -> tuple[str, str | None]:
    """The (VisionStateMachine, AutomaticModeStateMachine) states for a line's real state."""
    state = line.state
    if halted or state == "stopped":
        return "Halted", None
    if state in ("error", "degraded"):
        return "Error", None
    if state == "starting":
        return "Preoperational", None
    if line.mode == "free_run":
        return "Operational", "ContinuousExecution" if state == "running" else "Ready"
    if state == "paused":
        return "Operational", "Initialized"
    return "Operational", "SingleExecution" if busy else "Ready"


def _id_of(value: Any) -> str:
    """The Id of a Machine Vision id structure (empty when the client sent null)."""
    return str(getattr(value, "Id", "") or "").strip()


@dataclass
class _LineRuntime:
    """Server-side state of one line."""

    backend: LineBackend
    nodes: model.VisionSystemNodes
    event_gen: Any
    halted: bool = False
    jobs_in_flight: int = 0
    states: tuple[str, str | None] = ("", None)
    plc_busy: bool = False
    plc_result_ready: bool = False
    plc_last: dict[str, bool] | None = None
    plc_refused: int = 0
    plc_ready_written: bool | None = None
    plc_errors: int = 0


class VisionServer:
    """asyncua server serving `lines` (LineBackend) and the result history in `store`."""

    def __init__(
        self, config: OpcUaServerConfig, lines: Mapping[str, LineBackend], store: ResultStore
    ) -> None:
        self.config = config
        self.backends = dict(lines)
        self.store = store
        self.server: Server | None = None
        self.types: model.MvTypes | None = None
        self.lines: dict[str, _LineRuntime] = {}
        self.validator: TrustFolderValidator | None = None
        self.ruleset: RoleRuleset | None = None
        self.user_manager: PasswordUserManager | DemoUserManager | None = None
        self._pending: queue.SimpleQueue[ResultBody] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Future] = set()
        self._unknown_lines: set[Any] = set()
        self._server_events: Any = None
        self._plc_index: dict[ua.NodeId, tuple[str, str]] = {}
        self.published = 0
        self.publish_errors = 0
        self.submitted = 0

    # -- public, thread-safe -----------------------------------------------------------------------
    def submit_result(self, body: ResultBody) -> None:
        """Queue a journaled result for LatestResult + ResultReadyEvent. Never blocks; any thread."""
        self.submitted += 1
        self._pending.put(body)
        if self._wake is not None:
            self._from_thread(self._wake.set)

    def line_changed(self, line: str) -> None:
        """A line's state changed (call from any thread)."""
        self._from_thread(self._schedule_refresh, line)

    @property
    def port(self) -> int:
        assert self.server is not None and self.server.bserver is not None
        return int(self.server.bserver.port)

    @property
    def endpoint_url(self) -> str:
        assert self.server is not None
        ep = self.server.endpoint
        return f"opc.tcp://{ep.hostname}:{self.port}{ep.path}"

    def stats(self) -> dict[str, float]:
        return {
            "submitted": self.submitted,
            "published": self.published,
            "publish_errors": self.publish_errors,
            "backlog": self._pending.qsize(),
            "certificates_rejected": self.validator.rejected_count if self.validator else 0,
            "logins_refused": getattr(self.user_manager, "refused", 0),
            "calls_denied": self.ruleset.denied if self.ruleset else 0,
            "plc_triggers_refused": sum(rt.plc_refused for rt in self.lines.values()),
        }

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if cfg.security == "production":
            if not cfg.cert_path.exists() or not cfg.key_path.exists():
                raise FileNotFoundError(
                    f"opcua: server certificate {cfg.cert_path} or key {cfg.key_path} not found; "
                    f"make them with `edge-inspect opcua cert --pki-dir {cfg.pki_dir}`"
                )
            self.user_manager = PasswordUserManager(cfg.users)
        else:
            self.user_manager = DemoUserManager()
        server = Server(user_manager=self.user_manager)  # type: ignore[arg-type]
        await server.init()  # ~2 s of CPU on this loop: fine, it is our own thread
        server.set_endpoint(cfg.endpoint)
        server.set_server_name(cfg.server_name)
        await server.set_application_uri(cfg.application_uri)
        self.ruleset = RoleRuleset(self.user_manager)
        if cfg.security == "production":
            await server.load_certificate(str(cfg.cert_path))
            await server.load_private_key(str(cfg.key_path))
            server.set_security_policy(
                [SECURITY_POLICY_TYPES[p] for p in cfg.policies], permission_ruleset=self.ruleset
            )
            server.set_identity_tokens([ua.UserNameIdentityToken])  # anonymous refused
            self.validator = TrustFolderValidator(cfg.trusted_dir, cfg.rejected_dir)
            server.set_certificate_validator(self.validator)
        else:
            logger.warning(DEMO_BANNER)
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity], permission_ruleset=self.ruleset)
            server.set_identity_tokens([ua.AnonymousIdentityToken, ua.UserNameIdentityToken])
        self.server = server

        mv = await server.register_namespace(MACHINE_VISION_NS)
        app = await server.register_namespace(cfg.namespace_uri)
        self.types = await model.build_types(server, mv, app)
        self._server_events = await server.get_event_generator(
            self.types.ids["ResultReadyEventType"], ua.ObjectIds.Server
        )
        for name, backend in self.backends.items():
            nodes = await model.build_vision_system(server, self.types, name)
            gen = await server.get_event_generator(self.types.ids["ResultReadyEventType"], nodes.system)
            rt = _LineRuntime(
                backend=backend, nodes=nodes, event_gen=gen, plc_last={"Trigger": False, "ResultAck": False}
            )
            self.lines[name] = rt
            self._link_methods(name, rt)
            for tag in ("Trigger", "ResultAck"):
                self._plc_index[nodes.plc[tag].nodeid] = (name, tag)
            await self._write(nodes.plc["ModelVersion"], str(backend.model_version), ua.VariantType.String)
            backend.add_listener(lambda event, payload, _name=name: self.line_changed(_name))
            await self._refresh(name)
        self.ruleset.read_only_methods = {
            rt.nodes.methods[m].nodeid for rt in self.lines.values() for m in model.READ_ONLY_METHODS
        }
        server.subscribe_server_callback(CallbackType.PostWrite, self._on_client_write)
        await server.start()
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="opcua-publish"),
            asyncio.create_task(self._poll_states(), name="opcua-states"),
        ]
        self._wake.set()  # results submitted before start
        logger.info(
            "opcua: serving %d line(s) on %s (security: %s)", len(self.lines), self.endpoint_url, cfg.security
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.server is not None:
            await self.server.stop()

    # -- results (hot path) ------------------------------------------------------------------------
    async def _publish_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                try:
                    body = self._pending.get_nowait()
                except queue.Empty:
                    break
                try:
                    await self.publish(body)
                except Exception:  # one bad body must not stop the stream
                    self.publish_errors += 1
                    logger.exception("opcua: could not publish result %s", body.get("result_id"))
                # let client requests (Publish, reads, calls) and the subscription timers run between
                # results: a burst must not hold the loop until it is drained
                await asyncio.sleep(0)

    async def publish(self, body: ResultBody) -> None:
        """LatestResult of the body's line, then the ResultReadyEvent on its VisionSystem and on Server."""
        assert self.server is not None and self.types is not None
        rt = self.lines.get(str(body.get("line")))
        if rt is None:
            if body.get("line") not in self._unknown_lines:  # once per line, not once per result
                self._unknown_lines.add(body.get("line"))
                logger.warning(
                    "opcua: result %s is for line %r, which this server does not serve (serving: %s)",
                    body.get("result_id"),
                    body.get("line"),
                    ", ".join(self.lines),
                )
            return
        value = model.result_to_ua(self.types, body)
        await self.server.write_attribute_value(
            rt.nodes.latest_result.nodeid, ua.DataValue(ua.Variant(value, ua.VariantType.ExtensionObject))
        )
        message = f"{body.get('verdict')} part {body.get('part_id')} (seq {body.get('seq')})"
        severity = 500 if body.get("verdict") == "NG" else 100
        for gen in (rt.event_gen, self._server_events):
            event = gen.event
            for name, (field_value, _vtype) in model.event_field_values(self.types, value).items():
                setattr(event, name, field_value)
            event.SourceNode = rt.nodes.system.nodeid
            event.SourceName = rt.nodes.line
            event.Severity = severity
            # BaseEventType's optional classification: not a condition, so the base class, no subclasses
            event.ConditionClassId = ua.NodeId(ua.ObjectIds.BaseConditionClassType)
            event.ConditionClassName = ua.LocalizedText("BaseConditionClassType")
            event.ConditionSubClassId = []
            event.ConditionSubClassName = []
            await gen.trigger(time_attr=value.CreationTime, message=message)
        self.published += 1

    # -- state machine -----------------------------------------------------------------------------
    def _schedule_refresh(self, line: str) -> None:
        self._spawn(self._refresh(line))

    def _spawn(self, coro: Any) -> None:
        # keep a reference until done: the loop holds tasks only weakly
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _poll_states(self) -> None:
        # Backstop for lines that change state without telling their listeners.
        while True:
            await asyncio.sleep(0.5)
            for name in self.lines:
                await self._refresh(name)

    async def _refresh(self, line: str) -> None:
        rt = self.lines[line]
        states = vision_states(rt.backend, halted=rt.halted, busy=rt.jobs_in_flight > 0 or rt.plc_busy)
        if states != rt.states:
            rt.states = states
            top, auto = states
            n = rt.nodes
            await self._write(n.current_state, ua.LocalizedText(top), ua.VariantType.LocalizedText)
            await self._write(n.current_state_id, n.state_nodes[top], ua.VariantType.NodeId)
            await self._write(n.current_state_number, model.VISION_STATES[top], ua.VariantType.UInt32)
            await self._write(n.automatic_state, ua.LocalizedText(auto or ""), ua.VariantType.LocalizedText)
            await self._write(
                n.automatic_state_id, n.state_nodes[auto] if auto else ua.NodeId(), ua.VariantType.NodeId
            )
            await self._write(
                n.automatic_state_number, model.AUTOMATIC_STATES.get(auto or "", 0), ua.VariantType.UInt32
            )
        await self._write_plc_ready(rt)

    async def _write(self, node: Any, value: Any, vtype: ua.VariantType) -> None:
        assert self.server is not None
        await self.server.write_attribute_value(node.nodeid, ua.DataValue(ua.Variant(value, vtype)))

    # -- methods -----------------------------------------------------------------------------------
    def _link_methods(self, line: str, rt: _LineRuntime) -> None:
        assert self.server is not None
        handlers: dict[str, Callable[..., Any]] = {
            "Halt": self._halt,
            "Reset": self._reset,
            "SelectModeAutomatic": self._select_mode_automatic,
            "StartSingleJob": self._start_single_job,
            "StartContinuous": self._start_continuous,
            "Stop": self._stop,
            "Abort": self._abort,
            "PrepareRecipe": self._prepare_recipe,
            "GetRecipeListFiltered": self._get_recipe_list,
            "GetResultById": self._get_result_by_id,
            "GetResultListFiltered": self._get_result_list,
        }
        for name, handler in handlers.items():

            async def call(
                parent: ua.NodeId, *args: ua.Variant, _h: Callable[..., Any] = handler
            ) -> list[ua.Variant]:
                return await _h(rt, *[a.Value for a in args])

            self.server.link_method(rt.nodes.methods[name], call)

    @staticmethod
    def _error(code: int) -> ua.Variant:
        return ua.Variant(code, ua.VariantType.Int32)

    async def _in_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a backend call off the server loop (it may take a lock or touch SQLite)."""
        assert self._loop is not None
        return await self._loop.run_in_executor(None, lambda: fn(*args, **kwargs))

    def _job_id(self, job_id: str) -> ua.Variant:
        assert self.types is not None
        return ua.Variant(self.types.new("JobIdDataType", Id=job_id), ua.VariantType.ExtensionObject)

    async def _start_single_job(
        self, rt: _LineRuntime, meas: Any, part: Any, recipe: Any, product: Any, parameters: Any = None
    ) -> list[ua.Variant]:
        backend = rt.backend
        if backend.mode != "triggered":
            return [self._job_id(""), self._error(ERR_WRONG_MODE)]
        if rt.states[0] != "Operational" or rt.states[1] not in ("Ready", "SingleExecution"):
            return [self._job_id(""), self._error(ERR_NOT_READY)]
        recipe_id = _id_of(recipe) or None
        if recipe_id is not None and recipe_id not in backend.recipes:
            logger.warning(
                "opcua: StartSingleJob on %s: unknown recipe %r (known: %s)",
                backend.name,
                recipe_id,
                backend.recipes,
            )
            return [self._job_id(""), self._error(ERR_UNKNOWN_RECIPE)]
        job_id = uuid.uuid4().hex
        try:
            future = backend.trigger(
                _id_of(part) or None,
                meas_id=_id_of(meas) or None,
                recipe=recipe_id,
                product_id=_id_of(product) or None,
                job_id=job_id,
            )
        except Exception:
            logger.exception("opcua: StartSingleJob on %s refused by the line", backend.name)
            return [self._job_id(""), self._error(ERR_BACKEND)]
        rt.jobs_in_flight += 1
        future.add_done_callback(lambda f: self._from_thread(self._job_done, rt, f))
        await self._refresh(backend.name)
        return [self._job_id(job_id), self._error(0)]

    def _from_thread(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` on the server loop; from any thread, never blocking. No-op once stopped."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
                loop.call_soon_threadsafe(fn, *args)

    def _job_done(self, rt: _LineRuntime, future: Future) -> None:
        rt.jobs_in_flight = max(0, rt.jobs_in_flight - 1)
        if future.exception() is not None:
            logger.error("opcua: job on %s failed: %s", rt.backend.name, future.exception())
        self._schedule_refresh(rt.backend.name)

    async def _start_continuous(self, rt: _LineRuntime, *args: Any) -> list[ua.Variant]:
        if rt.backend.mode != "free_run":
            return [self._job_id(""), self._error(ERR_WRONG_MODE)]
        if rt.halted or rt.states[0] != "Operational":
            return [self._job_id(""), self._error(ERR_NOT_READY)]
        await self._in_thread(rt.backend.resume)
        await self._refresh(rt.backend.name)
        return [self._job_id(uuid.uuid4().hex), self._error(0)]

    async def _stop(self, rt: _LineRuntime, *args: Any) -> list[ua.Variant]:
        await self._in_thread(rt.backend.pause)
        await self._refresh(rt.backend.name)
        return [self._error(0)]

    async def _abort(self, rt: _LineRuntime, cause: int = 0, description: str = "") -> list[ua.Variant]:
        logger.info("opcua: Abort on %s (cause %s: %s)", rt.backend.name, cause, description)
        return await self._stop(rt)

    async def _halt(self, rt: _LineRuntime, cause: int = 0, description: str = "") -> list[ua.Variant]:
        logger.warning("opcua: Halt on %s (cause %s: %s)", rt.backend.name, cause, description)
        rt.halted = True
        await self._in_thread(rt.backend.pause)
        await self._refresh(rt.backend.name)
        return [self._error(0)]

    async def _reset(self, rt: _LineRuntime, cause: int = 0, description: str = "") -> list[ua.Variant]:
        logger.warning("opcua: Reset on %s (cause %s: %s)", rt.backend.name, cause, description)
        rt.halted = False
        await self._in_thread(rt.backend.resume)
        await self._refresh(rt.backend.name)
        return [self._error(0)]

    async def _select_mode_automatic(self, rt: _LineRuntime) -> list[ua.Variant]:
        return [self._error(0)]  # automatic is the only mode; Preoperational -> Operational is automatic

    async def _prepare_recipe(self, rt: _LineRuntime, external: Any, internal: Any) -> list[ua.Variant]:
        assert self.types is not None
        name = _id_of(internal) or _id_of(external)
        out = ua.Variant(self.types.new("RecipeIdInternalDataType", Id=name), ua.VariantType.ExtensionObject)
        if name not in rt.backend.recipes:
            logger.warning(
                "opcua: PrepareRecipe on %s: unknown recipe %r (known: %s)",
                rt.backend.name,
                name,
                rt.backend.recipes,
            )
            return [out, ua.Variant(False), self._error(ERR_UNKNOWN_RECIPE)]
        try:
            await self._in_thread(rt.backend.set_recipe, name)
        except (KeyError, ValueError) as exc:
            logger.warning("opcua: PrepareRecipe on %s: %s", rt.backend.name, exc)
            return [out, ua.Variant(False), self._error(ERR_UNKNOWN_RECIPE)]
        return [out, ua.Variant(True), self._error(0)]

    async def _get_recipe_list(
        self,
        rt: _LineRuntime,
        external: Any,
        product: Any,
        is_prepared: Any,
        max_results: int,
        start_index: int,
        timeout: int,
    ) -> list[ua.Variant]:
        assert self.types is not None
        names = list(rt.backend.recipes)
        wanted = _id_of(external)
        if wanted:
            names = [n for n in names if n == wanted]
        prepared = int(is_prepared) if is_prepared is not None else 2
        if prepared in (0, 1):
            names = [n for n in names if (n == rt.backend.active_recipe) == bool(prepared)]
        limit = max_results or len(names)
        page = names[start_index : start_index + limit]
        items = [self.types.new("RecipeIdInternalDataType", Id=n) for n in page]
        return [
            ua.Variant(start_index + len(page) >= len(names)),
            ua.Variant(len(page), ua.VariantType.UInt32),
            ua.Variant(0, ua.VariantType.UInt32),
            ua.Variant(items, ua.VariantType.ExtensionObject),
            self._error(0),
        ]

    async def _get_result_by_id(self, rt: _LineRuntime, result_id: Any, timeout: int = 0) -> list[ua.Variant]:
        assert self.types is not None
        body = await self._in_thread(self.store.get_by_id, _id_of(result_id))
        if body is None or body.get("line") != rt.backend.name:
            empty = model.placeholder_result(self.types)
            empty.ResultState = 0  # "Undefined ... indicates an error" (OPC 40100-1 §12.19)
            return [
                ua.Variant(0, ua.VariantType.UInt32),
                ua.Variant(empty, ua.VariantType.ExtensionObject),
                self._error(ERR_NOT_FOUND),
            ]
        value = model.result_to_ua(self.types, body)
        return [
            ua.Variant(0, ua.VariantType.UInt32),
            ua.Variant(value, ua.VariantType.ExtensionObject),
            self._error(0),
        ]

    async def _get_result_list(
        self,
        rt: _LineRuntime,
        result_state: Any,
        meas: Any,
        part: Any,
        ext_recipe: Any,
        int_recipe: Any,
        ext_config: Any,
        int_config: Any,
        product: Any,
        job: Any,
        max_results: int,
        start_index: int,
        timeout: int = 0,
    ) -> list[ua.Variant]:
        assert self.types is not None
        limit = int(max_results or 0) or self.config.max_results_per_call
        limit = min(limit, self.config.max_results_per_call)
        equals = {
            k: v
            for k, v in (
                ("meas_id", _id_of(meas)),
                ("product_id", _id_of(product)),
                ("job_id", _id_of(job)),
                ("recipe", _id_of(int_recipe) or _id_of(ext_recipe)),
            )
            if v
        }
        bodies: list[ResultBody] = []
        if int(result_state or 0) in (0, model.RESULT_STATE_COMPLETED):  # every journaled result is Completed
            bodies = await self._in_thread(
                self.store.query,
                line=rt.backend.name,
                part_id=_id_of(part) or None,
                limit=limit + 1,
                offset=int(start_index or 0),
                newest_first=False,
                **equals,
            )
        config_ids = {_id_of(ext_config), _id_of(int_config)} - {""}
        if config_ids:
            bodies = [
                b
                for b in bodies
                if config_ids & {(b.get("model") or {}).get("name"), (b.get("model") or {}).get("sha256")}
            ]
        complete = len(bodies) <= limit
        values = [model.result_to_ua(self.types, b) for b in bodies[:limit]]
        return [
            ua.Variant(complete),
            ua.Variant(len(values), ua.VariantType.UInt32),
            ua.Variant(0, ua.VariantType.UInt32),
            ua.Variant(values, ua.VariantType.ExtensionObject),
            self._error(0),
        ]

    # -- PLC handshake -----------------------------------------------------------------------------
    async def _on_client_write(self, event: Any, dispatcher: Any) -> None:
        for item, status in zip(event.request_params.NodesToWrite, event.response_params, strict=False):
            target = self._plc_index.get(item.NodeId)
            if target is None or not status.is_good():
                continue
            line, tag = target
            await self._plc_edge(self.lines[line], tag, bool(item.Value.Value.Value))

    async def _plc_edge(self, rt: _LineRuntime, tag: str, value: bool) -> None:
        assert rt.plc_last is not None
        rising = value and not rt.plc_last[tag]
        rt.plc_last[tag] = value
        if not rising:
            return
        if tag == "ResultAck":
            if rt.plc_result_ready:
                rt.plc_result_ready = False
                await self._write(rt.nodes.plc["ResultReady"], False, ua.VariantType.Boolean)
                await self._write_plc_ready(rt)
            return
        if not self._plc_ready(rt):
            rt.plc_refused += 1
            logger.warning(
                "opcua: PLC trigger on %s refused (busy=%s, result not acknowledged=%s, state=%s)",
                rt.backend.name,
                rt.plc_busy,
                rt.plc_result_ready,
                rt.states,
            )
            await self._write(rt.nodes.plc["TriggersRefused"], rt.plc_refused, ua.VariantType.UInt32)
            return
        rt.plc_busy = True
        await self._write(rt.nodes.plc["Busy"], True, ua.VariantType.Boolean)
        await self._write_plc_ready(rt)
        try:
            future = rt.backend.trigger(None, job_id=f"plc-{uuid.uuid4().hex}")
        except Exception:
            logger.exception("opcua: PLC trigger on %s refused by the line", rt.backend.name)
            await self._plc_failed(rt)
            return
        future.add_done_callback(lambda f: self._from_thread(self._schedule_plc_done, rt, f))

    def _schedule_plc_done(self, rt: _LineRuntime, future: Future) -> None:
        self._spawn(self._plc_done(rt, future))

    async def _plc_done(self, rt: _LineRuntime, future: Future) -> None:
        if future.exception() is not None:
            logger.error(
                "opcua: PLC-triggered inspection on %s failed: %s", rt.backend.name, future.exception()
            )
            await self._plc_failed(rt)
            return
        body = future.result()
        plc = rt.nodes.plc
        timings = body.get("timings_ms") or {}
        inference_ms = float(timings.get("infer", timings.get("inference", timings.get("total", 0.0))))
        # data first, then ResultReady, then Busy low: a PLC that sees ResultReady reads consistent data
        await self._write(plc["Verdict"], str(body.get("verdict", "")), ua.VariantType.String)
        await self._write(
            plc["DefectCount"],
            sum(1 for d in body.get("defects") or [] if d.get("counts_for_verdict", True)),
            ua.VariantType.UInt32,
        )
        await self._write(plc["PartId"], str(body.get("part_id", "")), ua.VariantType.String)
        await self._write(plc["ResultSeq"], int(body.get("seq") or 0), ua.VariantType.Int64)
        await self._write(
            plc["ModelVersion"], str((body.get("model") or {}).get("version", "")), ua.VariantType.String
        )
        await self._write(plc["InferenceMs"], inference_ms, ua.VariantType.Double)
        rt.plc_result_ready = True
        await self._write(plc["ResultReady"], True, ua.VariantType.Boolean)
        rt.plc_busy = False
        await self._write(plc["Busy"], False, ua.VariantType.Boolean)
        await self._refresh(rt.backend.name)

    async def _plc_failed(self, rt: _LineRuntime) -> None:
        rt.plc_errors += 1
        rt.plc_busy = False
        await self._write(rt.nodes.plc["TriggerErrors"], rt.plc_errors, ua.VariantType.UInt32)
        await self._write(rt.nodes.plc["Busy"], False, ua.VariantType.Boolean)
        await self._refresh(rt.backend.name)

    def _plc_ready(self, rt: _LineRuntime) -> bool:
        return (
            not rt.plc_busy
            and not rt.plc_result_ready
            and rt.backend.mode == "triggered"
            and rt.states == ("Operational", "Ready")
        )

    async def _write_plc_ready(self, rt: _LineRuntime) -> None:
        ready = self._plc_ready(rt)
        if ready != rt.plc_ready_written:  # the 0.5 s state poll must not spam PLC subscriptions
            rt.plc_ready_written = ready
            await self._write(rt.nodes.plc["Ready"], ready, ua.VariantType.Boolean)


class ServerThread:
    """Runs a `VisionServer` in its own thread with its own event loop."""

    def __init__(
        self, config: OpcUaServerConfig, lines: Mapping[str, LineBackend], store: ResultStore
    ) -> None:
        self.vision = VisionServer(config, lines, store)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the thread; return once the server listens (raise what made it fail)."""
        self._thread = threading.Thread(target=self._run, name="opcua-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"opcua: server did not start within {timeout} s")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.vision.start())
        except BaseException as exc:  # handed to start()'s caller
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.vision.stop())
            loop.close()

    def submit_result(self, body: ResultBody) -> None:
        self.vision.submit_result(body)

    def line_changed(self, line: str) -> None:
        self.vision.line_changed(line)

    @property
    def endpoint_url(self) -> str:
        return self.vision.endpoint_url

    def stop(self, timeout: float = 5.0) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def stats(self) -> dict[str, float]:
        return self.vision.stats()
