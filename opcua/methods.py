"""The Machine Vision methods of each VisionSystem (OPC 40100-1 §7, §8), linked to its method nodes.

Every call goes through `MachineVisionMethods.call()`: the object must be the method's owner
(`BadMethodInvalid`), the arguments must fit the official signature (`opcua.arguments`), then the
handler runs and answers the official output arguments. Semantic refusals are the `Error` output
(< 0 are application-specific in OPC 40100-1; values in `Err`), with status Good.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from asyncua import ua

from contract import InspectionResult
from opcua import model
from opcua.arguments import MethodSignature, read_signature
from opcua.served import ServedLine
from opcua.states import ALLOWED_FROM

if TYPE_CHECKING:
    from opcua.server import VisionServer

logger = logging.getLogger(__name__)


class Err:
    """Error out-argument values (OPC 40100-1: 0 OK, < 0 application-specific)."""

    OK = 0
    NOT_READY = -1  # the line is not in a state that accepts this call
    UNKNOWN_RECIPE = -2
    WRONG_MODE = -3  # StartContinuous on a triggered line, StartSingleJob on a free-run line
    BACKEND = -4  # the line refused (see the agent log)
    NOT_FOUND = -5  # no such result / configuration for this line
    UNKNOWN_HANDLE = -6  # ReleaseResultHandle with a handle this server did not give out


MAX_TIMEOUT_MS = 10_000  # GetResultById/GetResultComponentsById wait at most this long for a result
_HANDLES_KEPT = 10_000

Handler = Callable[..., Awaitable[list[ua.Variant]]]


def _id_of(value: Any) -> str:
    """The Id of a Machine Vision id structure ("" when empty)."""
    return str(getattr(value, "Id", "") or "").strip()


def _int32(value: int) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.Int32)


def _uint32(value: int) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.UInt32)


def _bool(value: bool) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.Boolean)


def _x(value: Any) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.ExtensionObject)


class MachineVisionMethods:
    """Handlers of one server's Machine Vision methods."""

    def __init__(self, host: VisionServer) -> None:
        self.host = host
        self._signatures: dict[ua.NodeId, tuple[MethodSignature, ua.NodeId]] = {}
        self._handle_ids = itertools.count(1)
        self._handles: OrderedDict[int, str] = OrderedDict()  # handle -> what it was given out for

    @property
    def types(self) -> model.MvTypes:
        assert self.host.types is not None
        return self.host.types

    async def link(self, served: ServedLine) -> None:
        server = self.host.server
        assert server is not None
        cache: dict[ua.NodeId, tuple] = {}
        handlers: dict[str, Handler] = {
            "Halt": self.halt,
            "Reset": self.reset,
            "SelectModeAutomatic": self.select_mode_automatic,
            "StartSingleJob": self.start_single_job,
            "StartContinuous": self.start_continuous,
            "Stop": self.stop,
            "Abort": self.abort,
            "PrepareRecipe": self.prepare_recipe,
            "UnprepareRecipe": self.unprepare_recipe,
            "GetRecipeListFiltered": self.get_recipe_list_filtered,
            "GetResultById": self.get_result_by_id,
            "GetResultComponentsById": self.get_result_components_by_id,
            "GetResultListFiltered": self.get_result_list_filtered,
            "ReleaseResultHandle": self.release_result_handle,
            "ActivateConfiguration": self.activate_configuration,
            "GetConfigurationById": self.get_configuration_by_id,
            "GetConfigurationList": self.get_configuration_list,
        }
        for name, handler in handlers.items():
            node = served.nodes.methods[name]
            owner = (await node.get_parent()).nodeid
            signature = await read_signature(server, node.nodeid, cache)
            self._signatures[node.nodeid] = (signature, owner)

            async def call(
                parent: ua.NodeId,
                *args: ua.Variant,
                _h: Handler = handler,
                _sig: MethodSignature = signature,
                _owner: ua.NodeId = owner,
            ) -> Any:
                if parent != _owner:
                    return ua.CallMethodResult(StatusCode=ua.StatusCode(ua.StatusCodes.BadMethodInvalid))
                refused = _sig.check(list(args))
                if refused is not None:
                    logger.info(
                        "opcua: %s on %s: %s", _sig.name, served.backend.name, refused.StatusCode.name
                    )
                    return refused
                return await _h(served, *[a.Value for a in args])

            # asyncua hands a raw-Variant callback the Variants (it unwraps only for uamethod)
            server.link_method(node, call)

    # -- helpers -----------------------------------------------------------------------------------
    def _handle(self, what: str) -> ua.Variant:
        handle = next(self._handle_ids) % 0xFFFFFFFF or next(self._handle_ids)
        self._handles[handle] = what
        while len(self._handles) > _HANDLES_KEPT:
            self._handles.popitem(last=False)
        return _uint32(handle)

    def _job_id(self, job_id: str) -> ua.Variant:
        return _x(self.types.new("JobIdDataType", Id=job_id))

    @staticmethod
    def _allowed(served: ServedLine, method: str) -> bool:
        """Whether the NodeSet has a transition caused by `method` out of the line's current state."""
        top, automatic = served.state.states
        state = automatic if top == "Operational" and method not in ("Halt", "Reset") else top
        return state in ALLOWED_FROM[method]

    async def _apply(self, served: ServedLine, cause: str) -> None:
        """Bring the state machines in step after `cause` acted. The cause is set before the line is
        touched (its listener may refresh first) and dropped after, so it names only its own change."""
        served.state.cause = cause
        await self.host.refresh(served.backend.name)
        served.state.cause = None

    # -- VisionStateMachine ------------------------------------------------------------------------
    async def halt(self, served: ServedLine, cause: int, description: str) -> list[ua.Variant]:
        if not self._allowed(served, "Halt"):  # Halted already: no transition
            return [_int32(Err.NOT_READY)]
        logger.warning("opcua: Halt on %s (cause %s: %s)", served.backend.name, cause, description)
        served.state.halted = True
        served.state.cause = "Halt"
        await self.host.in_thread(served.backend.pause)
        await self._apply(served, "Halt")
        return [_int32(Err.OK)]

    async def reset(self, served: ServedLine, cause: int, description: str) -> list[ua.Variant]:
        """Halted / Error / Operational -> Preoperational, held until SelectModeAutomatic."""
        if not self._allowed(served, "Reset"):  # Preoperational already: no transition
            return [_int32(Err.NOT_READY)]
        logger.warning("opcua: Reset on %s (cause %s: %s)", served.backend.name, cause, description)
        st = served.state
        st.halted = False
        st.preoperational = True
        st.unprepared = False
        st.cause = "Reset"
        await self.host.in_thread(served.backend.pause)
        await self._apply(served, "Reset")
        return [_int32(Err.OK)]

    async def select_mode_automatic(self, served: ServedLine) -> list[ua.Variant]:
        """Preoperational -> Operational (automatic is the only mode)."""
        if not self._allowed(served, "SelectModeAutomatic") or served.state.halted:
            return [_int32(Err.NOT_READY)]
        served.state.preoperational = False
        served.state.cause = "SelectModeAutomatic"
        if served.backend.state == "paused":
            await self.host.in_thread(served.backend.resume)
        await self._apply(served, "SelectModeAutomatic")
        return [_int32(Err.OK)]

    # -- AutomaticModeStateMachine -----------------------------------------------------------------
    async def start_single_job(
        self, served: ServedLine, meas: Any, part: Any, recipe: Any, product: Any, parameters: Any
    ) -> list[ua.Variant]:
        backend, st = served.backend, served.state
        if backend.mode != "triggered":
            return [self._job_id(""), _int32(Err.WRONG_MODE)]
        recipe_id = _id_of(recipe) or None
        if recipe_id is not None and recipe_id not in backend.recipes:
            logger.warning(
                "opcua: StartSingleJob on %s: unknown recipe %r (known: %s)",
                backend.name,
                recipe_id,
                backend.recipes,
            )
            return [self._job_id(""), _int32(Err.UNKNOWN_RECIPE)]
        # from Ready only (ReadyToSingleExecution); during SingleExecution only where the site queues jobs
        queued = self.host.config.queue_single_jobs and st.states == ("Operational", "SingleExecution")
        if not (self._allowed(served, "StartSingleJob") or queued):
            return [self._job_id(""), _int32(Err.NOT_READY)]
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
            return [self._job_id(""), _int32(Err.BACKEND)]
        st.cause = "StartSingleJob"
        st.jobs_in_flight += 1
        st.current_job = job_id
        st.started_jobs.add(job_id)
        future.add_done_callback(lambda f: self.host.from_thread(self._job_done, served, f))
        await self._apply(served, "StartSingleJob")
        return [self._job_id(job_id), _int32(Err.OK)]

    def _job_done(self, served: ServedLine, future: Future[InspectionResult]) -> None:
        served.state.jobs_in_flight = max(0, served.state.jobs_in_flight - 1)
        if future.exception() is not None:
            logger.error("opcua: job on %s failed: %s", served.backend.name, future.exception())
        self.host.schedule_refresh(served.backend.name)

    async def start_continuous(
        self, served: ServedLine, meas: Any, part: Any, recipe: Any, product: Any, parameters: Any
    ) -> list[ua.Variant]:
        backend, st = served.backend, served.state
        if backend.mode != "free_run":
            return [self._job_id(""), _int32(Err.WRONG_MODE)]
        recipe_id = _id_of(recipe)
        if recipe_id and recipe_id not in backend.recipes:
            logger.warning(
                "opcua: StartContinuous on %s: unknown recipe %r (known: %s)",
                backend.name,
                recipe_id,
                backend.recipes,
            )
            return [self._job_id(""), _int32(Err.UNKNOWN_RECIPE)]
        if not self._allowed(served, "StartContinuous"):
            return [self._job_id(""), _int32(Err.NOT_READY)]
        st.cause = "StartContinuous"
        job_id = uuid.uuid4().hex
        ids = {"meas_id": _id_of(meas), "part_id": _id_of(part), "product_id": _id_of(product)}
        try:
            if recipe_id and recipe_id != backend.active_recipe:
                await self.host.in_thread(backend.set_recipe, recipe_id)
            await self.host.in_thread(backend.resume, job_id=job_id, **{k: v or None for k, v in ids.items()})
        except (KeyError, ValueError, RuntimeError) as exc:
            logger.warning("opcua: StartContinuous on %s refused by the line: %s", backend.name, exc)
            return [self._job_id(""), _int32(Err.BACKEND)]
        st.current_job = job_id
        await self._apply(served, "StartContinuous")
        return [self._job_id(st.current_job), _int32(Err.OK)]

    async def stop(self, served: ServedLine, cause: int, description: str) -> list[ua.Variant]:
        return await self._end_execution(served, "Stop", cause, description)

    async def abort(self, served: ServedLine, cause: int, description: str) -> list[ua.Variant]:
        return await self._end_execution(served, "Abort", cause, description)

    async def _end_execution(
        self, served: ServedLine, how: str, cause: int, description: str
    ) -> list[ua.Variant]:
        """Continuous execution pauses (-> Ready, ContinuousExecutionToReadyStop/Abort); a single job in
        flight completes (an inspection is not cut off), after which the line takes
        SingleExecutionToReadyStop/Abort to Ready."""
        if not self._allowed(served, how):
            return [_int32(Err.NOT_READY)]
        logger.info("opcua: %s on %s (cause %s: %s)", how, served.backend.name, cause, description)
        served.state.cause = how
        if served.state.states[1] == "SingleExecution":
            served.state.ending = how
        if served.backend.mode == "free_run":
            await self.host.in_thread(served.backend.pause)
        await self._apply(served, how)
        return [_int32(Err.OK)]

    # -- RecipeManagement --------------------------------------------------------------------------
    def _recipe_out(self, name: str) -> ua.Variant:
        return _x(self.types.new("RecipeIdInternalDataType", Id=name))

    async def prepare_recipe(self, served: ServedLine, external: Any, internal: Any) -> list[ua.Variant]:
        backend, st = served.backend, served.state
        name = _id_of(internal) or _id_of(external)
        if st.states[0] != "Operational":
            return [self._recipe_out(name), _bool(False), _int32(Err.NOT_READY)]
        if name not in backend.recipes:
            logger.warning(
                "opcua: PrepareRecipe on %s: unknown recipe %r (known: %s)",
                backend.name,
                name,
                backend.recipes,
            )
            return [self._recipe_out(name), _bool(False), _int32(Err.UNKNOWN_RECIPE)]
        try:
            await self.host.in_thread(backend.set_recipe, name)
        except (KeyError, ValueError) as exc:
            logger.warning("opcua: PrepareRecipe on %s: %s", backend.name, exc)
            return [self._recipe_out(name), _bool(False), _int32(Err.UNKNOWN_RECIPE)]
        st.unprepared = False
        await self._apply(served, "PrepareRecipe")
        return [self._recipe_out(name), _bool(True), _int32(Err.OK)]

    async def unprepare_recipe(self, served: ServedLine, external: Any, internal: Any) -> list[ua.Variant]:
        """Ready -> Initialized: no job starts until a recipe is prepared again."""
        backend, st = served.backend, served.state
        name = _id_of(internal) or _id_of(external)
        if name and name not in backend.recipes:
            return [self._recipe_out(name), _int32(Err.UNKNOWN_RECIPE)]
        if name and name != backend.active_recipe:  # only the prepared recipe can be unprepared
            return [self._recipe_out(name), _int32(Err.NOT_READY)]
        if st.states not in (("Operational", "Ready"), ("Operational", "Initialized")):
            return [self._recipe_out(name), _int32(Err.NOT_READY)]
        st.unprepared = True
        await self._apply(served, "UnprepareRecipe")
        return [self._recipe_out(backend.active_recipe), _int32(Err.OK)]

    async def get_recipe_list_filtered(
        self,
        served: ServedLine,
        external: Any,
        product: Any,
        is_prepared: int,
        max_results: int,
        start_index: int,
        timeout: int,
    ) -> list[ua.Variant]:
        backend = served.backend
        names = list(backend.recipes)
        wanted = _id_of(external)
        if wanted:
            names = [n for n in names if n == wanted]
        if is_prepared in (0, 1):
            active = backend.active_recipe if not served.state.unprepared else None
            names = [n for n in names if (n == active) == bool(is_prepared)]
        limit = max_results or len(names)
        page = names[start_index : start_index + limit]
        return [
            _bool(start_index + len(page) >= len(names)),
            _uint32(len(page)),
            self._handle("recipes"),
            _x([self.types.new("RecipeIdInternalDataType", Id=n) for n in page]),
            _int32(Err.OK),
        ]

    # -- ResultManagement --------------------------------------------------------------------------
    async def _find_result(
        self, served: ServedLine, result_id: str, timeout_ms: int
    ) -> InspectionResult | None:
        """The result of this line with that id; waits up to `timeout_ms` for it to be journaled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
        while True:
            result = await self.host.in_thread(self.host.store.get_by_id, result_id) if result_id else None
            if result is not None:
                return result if result.line == served.backend.name else None
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(0.05)

    async def get_result_by_id(self, served: ServedLine, result_id: Any, timeout: int) -> list[ua.Variant]:
        result = await self._find_result(served, _id_of(result_id), timeout)
        if result is None:
            return [_uint32(0), _x(model.empty_result(self.types)), _int32(Err.NOT_FOUND)]
        return [self._handle(result.result_id), _x(model.result_to_ua(self.types, result)), _int32(Err.OK)]

    async def get_result_components_by_id(
        self, served: ServedLine, result_id: Any, timeout: int
    ) -> list[ua.Variant]:
        """The result's fields one by one; ResultContent = [InspectionContent, one CameraComponent per
        camera (its defects and its archived image, where one was kept)]."""
        result = await self._find_result(served, _id_of(result_id), timeout)
        if result is None:
            value, handle, error, content = model.empty_result(self.types), _uint32(0), Err.NOT_FOUND, []
        else:
            value = model.result_to_ua(self.types, result)
            images = await self.host.in_thread(self.host.store.images, result)
            cameras = model.camera_components_to_ua(self.types, result, images)
            content = [
                *value.ResultContent,
                *[ua.Variant(c, ua.VariantType.ExtensionObject) for c in cameras],
            ]
            handle, error = self._handle(result.result_id), Err.OK
        fields = model.result_field_variants(self.types, value)
        fields["ResultContent"] = ua.Variant(content, ua.VariantType.Variant)
        return [
            fields["HasTransferableDataOnFile"],
            handle,
            *(
                fields[name]
                for name in model.RESULT_FIELDS
                if name not in ("ResultId", "HasTransferableDataOnFile")
            ),
            _int32(error),
        ]

    async def get_result_list_filtered(
        self,
        served: ServedLine,
        result_state: int,
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
        timeout: int,
    ) -> list[ua.Variant]:
        cap = self.host.config.max_results_per_call
        limit = min(int(max_results or 0) or cap, cap)
        equals = {
            key: value
            for key, value in (
                ("meas_id", _id_of(meas)),
                ("product_id", _id_of(product)),
                ("job_id", _id_of(job)),
                ("recipe", _id_of(int_recipe) or _id_of(ext_recipe)),
            )
            if value
        }
        results: list[InspectionResult] = []
        if int(result_state or 0) in (0, model.RESULT_STATE_COMPLETED):  # every journaled result is Completed
            results = await self.host.in_thread(
                self.host.store.query,
                line=served.backend.name,
                part_id=_id_of(part) or None,
                limit=limit + 1,
                offset=int(start_index or 0),
                newest_first=False,
                by_time=True,  # oldest first by CreationTime, the field a client sorts on
                **equals,
            )
        wanted_ext, wanted_int = _id_of(ext_config), _id_of(int_config)
        if wanted_ext:
            results = [r for r in results if r.model.name == wanted_ext]
        if wanted_int:
            results = [
                r for r in results if model.configuration_id_of(self.types, r.line, r.model).Id == wanted_int
            ]
        complete = len(results) <= limit
        values = [model.result_to_ua(self.types, r) for r in results[:limit]]
        return [_bool(complete), _uint32(len(values)), self._handle("list"), _x(values), _int32(Err.OK)]

    async def release_result_handle(self, served: ServedLine, handle: int) -> list[ua.Variant]:
        """Results are journal rows: nothing is held for a handle; releasing forgets it."""
        if self._handles.pop(int(handle), None) is None:
            return [_int32(Err.UNKNOWN_HANDLE)]
        return [_int32(Err.OK)]

    # -- ConfigurationManagement -------------------------------------------------------------------
    async def activate_configuration(self, served: ServedLine, internal: Any) -> list[ua.Variant]:
        """The line has one configuration (its YAML and model): activating it is a no-op."""
        conf = await self.host.in_thread(served.backend.configuration)
        return [_int32(Err.OK if _id_of(internal) == conf.id else Err.NOT_FOUND)]

    async def get_configuration_by_id(
        self, served: ServedLine, internal: Any, timeout: int
    ) -> list[ua.Variant]:
        conf = await self.host.in_thread(served.backend.configuration)
        value = model.configuration_to_ua(self.types, conf)
        if _id_of(internal) != conf.id:
            return [_uint32(0), _x(value), _int32(Err.NOT_FOUND)]
        return [self._handle(conf.id), _x(value), _int32(Err.OK)]

    async def get_configuration_list(
        self, served: ServedLine, max_results: int, start_index: int, timeout: int
    ) -> list[ua.Variant]:
        conf = await self.host.in_thread(served.backend.configuration)
        items = [model.configuration_to_ua(self.types, conf)][start_index : start_index + (max_results or 1)]
        return [_bool(True), _uint32(len(items)), self._handle("configurations"), _x(items), _int32(Err.OK)]
