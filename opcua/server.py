"""The OPC UA server of the agent: one Machine Vision `VisionSystem` per line.

`VisionServer` runs inside an asyncio loop (tests may drive it directly); `ServerThread` gives it its
own thread and event loop so that nothing the server does (its start, a slow client, SQLite reads for
GetResultListFiltered) can ever stall inference. The agent hands results over with
`submit_result(result)`, which is thread-safe and never blocks: results go into an unbounded queue
and the loop is woken with `call_soon_threadsafe`. Nothing is dropped from what the server
publishes, and the OPC UA result history (GetResultById, GetResultListFiltered) is read from the journal.

This module is the bootstrap (security, the official NodeSet, one VisionSystem per line) and the
result stream; the methods live in `opcua.methods`, the state machines in `opcua.states`, the PLC
handshake in `opcua.plc`.

Example (demo profile, one line object that satisfies `opcua.backend.LineBackend`)::

    server = ServerThread(OpcUaServerConfig(security="none", endpoint="opc.tcp://127.0.0.1:4840/"),
                          lines={"line1": line}, store=store)
    server.start()            # returns once clients can connect
    server.submit_result(result)
    server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
from collections.abc import Callable, Coroutine, Mapping
from datetime import timedelta
from typing import Any

from asyncua import Server, ua
from asyncua.common.callback import CallbackType

from contract import InspectionResult
from opcua import model
from opcua.backend import LineBackend, ResultStore
from opcua.config import OpcUaServerConfig
from opcua.history import ResultEventHistory
from opcua.methods import MachineVisionMethods
from opcua.nodeset import import_machine_vision
from opcua.plc import PlcHandshake
from opcua.security import (
    SECURITY_POLICY_TYPES,
    DemoUserManager,
    PasswordUserManager,
    RoleRuleset,
    TrustFolderValidator,
)
from opcua.served import ServedLine
from opcua.states import StateMachines, classify, vision_states

logger = logging.getLogger(__name__)

DEMO_BANNER = (
    "\n" + "!" * 78 + "\n"
    "!!  OPC UA SERVER RUNNING WITH `security: none`: NO ENCRYPTION, NO AUTHENTICATION.        !!\n"
    "!!  Anyone on the network can trigger inspections and change recipes. Demo benches only. !!\n" + "!" * 78
)


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
        self.lines: dict[str, ServedLine] = {}
        self.validator: TrustFolderValidator | None = None
        self.ruleset: RoleRuleset | None = None
        self.user_manager: PasswordUserManager | DemoUserManager | None = None
        self.methods = MachineVisionMethods(self)
        self.plc = PlcHandshake(self)
        self.state_machines: StateMachines | None = None
        self.history: ResultEventHistory | None = None
        self._pending: queue.SimpleQueue[InspectionResult] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Future] = set()
        self._unknown_lines: set[str] = set()
        self._result_events: dict[str, list[Any]] = {}
        self.published = 0
        self.publish_errors = 0
        self.submitted = 0

    # -- public, thread-safe -----------------------------------------------------------------------
    def submit_result(self, result: InspectionResult) -> None:
        """Queue a journaled result for LatestResult + ResultReadyEvent. Never blocks; any thread."""
        self.submitted += 1
        self._pending.put(result)
        if self._wake is not None:
            self.from_thread(self._wake.set)

    def line_changed(self, line: str) -> None:
        """A line's state changed (call from any thread)."""
        self.from_thread(self.schedule_refresh, line)

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
            "plc_triggers_refused": sum(s.plc.refused for s in self.lines.values()),
            "history_reads": self.history.reads if self.history else 0,
            "history_events_read": self.history.events_read if self.history else 0,
        }

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        server = await self._secured_server()
        self.server = server
        mv = await import_machine_vision(server)
        app = await server.register_namespace(cfg.namespace_uri)
        self.types = types = await model.build_vendor_types(server, mv, app)
        self.state_machines = StateMachines(server, types)
        for name, backend in self.backends.items():
            nodes = await model.build_vision_system(server, types, name)
            served = ServedLine(backend=backend, nodes=nodes)
            self.lines[name] = served
            await self.methods.link(served)
            self.plc.add_line(served)
            await self.state_machines.add_line(name, nodes)
            assert self.history is not None
            await self.history.add_line(name, nodes.system)
            self._result_events[name] = [
                await server.get_event_generator(types.id("ResultReadyEventType"), nodes.system),
                await server.get_event_generator(types.id("ResultReadyEventType"), ua.ObjectIds.Server),
            ]
            for gen in self._result_events[name]:  # the same in every event of this line
                gen.event.SourceNode = nodes.system.nodeid
                gen.event.SourceName = name
                classify(gen.event)
            await self.write(nodes.plc["ModelVersion"], str(backend.model_version), ua.VariantType.String)
            await self._write_configuration(served)
            backend.add_listener(lambda event, payload, _name=name: self.line_changed(_name))
            await self.refresh(name)
        assert self.history is not None
        await self.history.advertise()
        assert self.ruleset is not None
        self.ruleset.read_only_methods = {
            s.nodes.methods[m].nodeid for s in self.lines.values() for m in model.READ_ONLY_METHODS
        }
        server.subscribe_server_callback(CallbackType.PostWrite, self.plc.on_client_write)
        await server.start()
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="opcua-publish"),
            asyncio.create_task(self._poll_states(), name="opcua-states"),
        ]
        self._wake.set()  # results submitted before start
        logger.info(
            "opcua: serving %d line(s) on %s (security: %s)", len(self.lines), self.endpoint_url, cfg.security
        )

    async def _secured_server(self) -> Server:
        """The asyncua server with the configured security profile (docs/opcua.md, Security)."""
        cfg = self.config
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
        # HistoryRead of events: journaled results as ResultReadyEvents (opcua.history); before init()
        self.history = ResultEventHistory(server.iserver, self)
        server.iserver.history_manager = self.history
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
        return server

    async def stop(self) -> None:
        """Stop the tasks and the server, then every task still pending on this loop (client
        sessions, subscriptions), so the loop closes with none left (no "Task was destroyed")."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.server is not None:
            await self.server.stop()
        current = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        for task in rest:
            task.cancel()
        if rest:
            await asyncio.gather(*rest, return_exceptions=True)

    # -- results (hot path) ------------------------------------------------------------------------
    async def _publish_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                try:
                    result = self._pending.get_nowait()
                except queue.Empty:
                    break
                try:
                    await self.publish(result)
                except Exception:  # one bad result must not stop the stream
                    self.publish_errors += 1
                    logger.exception("opcua: could not publish result %s", result.result_id)
                # let client requests (Publish, reads, calls) and the subscription timers run between
                # results: a burst must not hold the loop until it is drained
                await asyncio.sleep(0)

    async def publish(self, result: InspectionResult) -> None:
        """LatestResult (and its children) of the result's line, then the ResultReadyEvent on its
        VisionSystem and on Server (and AcquisitionDoneEvent first for jobs this server started)."""
        assert self.server is not None and self.types is not None and self.state_machines is not None
        served = self.lines.get(result.line)
        if served is None:
            if result.line not in self._unknown_lines:  # once per line, not once per result
                self._unknown_lines.add(result.line)
                logger.warning(
                    "opcua: result %s is for line %r, which this server does not serve (serving: %s)",
                    result.result_id,
                    result.line,
                    ", ".join(self.lines),
                )
            return
        value = model.result_to_ua(self.types, result)
        fields = model.result_field_variants(self.types, value)
        nodes = served.nodes
        write = self.server.write_attribute_value
        # children first: a client that reads them after LatestResult changed sees the same result;
        # the ones equal to the last result's (IsPartial, the recipe and configuration ids) stay
        last = served.state.last_children
        for name, variant in fields.items():
            if last.get(name) != variant.Value:
                await write(nodes.latest_children[name].nodeid, ua.DataValue(variant))
                last[name] = variant.Value
        await write(
            nodes.latest_result.nodeid, ua.DataValue(ua.Variant(value, ua.VariantType.ExtensionObject))
        )
        if result.job_id and result.job_id in served.state.started_jobs:
            served.state.started_jobs.discard(result.job_id)
            acquired = value.ProcessingTimes.StartTime + timedelta(
                milliseconds=result.timings_ms.get("capture", 0.0)
            )
            await self.state_machines.emit(
                nodes,
                "AcquisitionDoneEventType",
                {"JobId": (value.JobId, ua.VariantType.ExtensionObject)},
                f"frames of job {result.job_id} acquired",
                100,
                acquired,
            )
        message, severity = model.result_event_text(result)
        for gen in self._result_events[result.line]:
            event = gen.event
            for name in model.EVENT_FIELDS:
                variant = fields[name]
                event.add_property(name, variant.Value, variant.VariantType)
            event.Severity = severity
            await gen.trigger(time_attr=value.CreationTime, message=message)
        self.published += 1

    # -- state -------------------------------------------------------------------------------------
    def schedule_refresh(self, line: str) -> None:
        self.spawn(self.refresh(line))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        # keep a reference until done: the loop holds tasks only weakly
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _poll_states(self) -> None:
        # Backstop for lines that change state without telling their listeners.
        while True:
            await asyncio.sleep(0.5)
            for name in self.lines:
                await self.refresh(name)

    async def refresh(self, line: str) -> None:
        """Bring the line's state machines, SystemState and PLC Ready in step with the line."""
        served = self.lines.get(line)
        if self.state_machines is None or self.types is None or served is None:
            return  # changed before its nodes exist: start() refreshes each line once built
        st, backend = served.state, served.backend
        states = vision_states(backend, st, busy=st.jobs_in_flight > 0 or served.plc.busy)
        if states != st.states:
            await self.state_machines.write(served.nodes, st, states)
            description = f"{backend.state}; {states[0]}" + (f"/{states[1]}" if states[1] else "")
            await self.write(
                served.nodes.system_state,
                model.system_state_to_ua(self.types, backend.state, description),
                ua.VariantType.ExtensionObject,
            )
        if served.nodes.active_configuration is not None:
            await self._write_configuration(served)
        await self.plc.write_ready(served)

    async def _write_configuration(self, served: ServedLine) -> None:
        assert self.types is not None
        conf = served.backend.configuration()
        if conf != served.state.configuration:
            served.state.configuration = conf
            value = model.configuration_to_ua(self.types, conf)
            await self.write(served.nodes.active_configuration, value, ua.VariantType.ExtensionObject)

    async def write(self, node: Any, value: Any, vtype: ua.VariantType) -> None:
        assert self.server is not None
        await self.server.write_attribute_value(node.nodeid, ua.DataValue(ua.Variant(value, vtype)))

    # -- threads -----------------------------------------------------------------------------------
    def from_thread(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` on the server loop; from any thread, never blocking. No-op once stopped."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
                loop.call_soon_threadsafe(fn, *args)

    async def in_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a backend call off the server loop (it may take a lock or touch SQLite)."""
        assert self._loop is not None
        return await self._loop.run_in_executor(None, lambda: fn(*args, **kwargs))


__all__ = ["VisionServer"]
