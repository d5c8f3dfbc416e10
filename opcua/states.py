"""The two state machines of a VisionSystem (OPC 40100-1 §8), derived from the line's real state.

`LineState` holds what the server knows beyond the line itself (Halt/Reset, an unprepared recipe,
jobs in flight); `vision_states()` maps both onto (VisionStateMachine, AutomaticModeStateMachine)
states. `StateMachines.refresh()` writes CurrentState and LastTransition, and emits the transition
event of every change (StateChangedEventType, plus ErrorEvent / ErrorResolvedEvent / ReadyEvent /
JobStartedEvent where the official transition has that effect) on the VisionSystem and the Server
object. Transitions are the official ones (NodeIds and TransitionNumbers of the NodeSet); a method
call names its cause so the method transition (e.g. OperationalToHalted, 421) is told from the
automatic one (OperationalToHaltedAuto, 420).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from asyncua import Server, ua

from opcua import model
from opcua.backend import LineBackend

logger = logging.getLogger(__name__)

# official transitions: (from, to) -> [(cause method, or None: "Auto"), NodeId, TransitionNumber, BrowseName]
_TRANSITIONS: dict[tuple[str, str], list[tuple[str | None, int, int, str]]] = {
    ("Error", "Halted"): [("Halt", 5041, 321, "ErrorToHalted"), (None, 5042, 320, "ErrorToHaltedAuto")],
    ("Error", "Operational"): [(None, 5255, 340, "ErrorToOperationalAuto")],
    ("Error", "Preoperational"): [
        ("Reset", 5039, 311, "ErrorToPreoperational"),
        (None, 5040, 310, "ErrorToPreoperationalAuto"),
    ],
    ("Halted", "Preoperational"): [
        ("Reset", 5037, 211, "HaltedToPreoperational"),
        (None, 5038, 210, "HaltedToPreoperationalAuto"),
    ],
    ("Operational", "Error"): [(None, 5051, 430, "OperationalToErrorAuto")],
    ("Operational", "Halted"): [
        ("Halt", 5049, 421, "OperationalToHalted"),
        (None, 5050, 420, "OperationalToHaltedAuto"),
    ],
    ("Operational", "Preoperational"): [
        ("Reset", 5047, 411, "OperationalToPreoperational"),
        (None, 5048, 410, "OperationalToPreoperationalAuto"),
    ],
    ("Preoperational", "Error"): [(None, 5034, 130, "PreoperationalToErrorAuto")],
    ("Preoperational", "Halted"): [
        ("Halt", 5032, 121, "PreoperationalToHalted"),
        (None, 5033, 120, "PreoperationalToHaltedAuto"),
    ],
    ("Preoperational", "Operational"): [
        ("SelectModeAutomatic", 5253, 141, "PreoperationalToOperational"),
        (None, 5254, 140, "PreoperationalToOperationalAuto"),
    ],
    # into Operational's AutomaticModeStateMachine, which starts in Initialized (OPC 40100-1 §8.3.2.1)
    ("Preoperational", "Initialized"): [
        ("SelectModeAutomatic", 5035, 151, "PreoperationalToInitialized"),
        (None, 5036, 150, "PreoperationalToInitializedAuto"),
    ],
    ("ContinuousExecution", "Ready"): [
        ("Abort", 5072, 862, "ContinuousExecutionToReadyAbort"),
        ("Stop", 5071, 861, "ContinuousExecutionToReadyStop"),
        (None, 5073, 860, "ContinuousExecutionToReadyAuto"),
    ],
    ("Initialized", "Ready"): [
        ("PrepareRecipe", 5060, 561, "InitializedToReadyRecipe"),
        (None, 5061, 560, "InitializedToReadyAuto"),
    ],
    ("Ready", "ContinuousExecution"): [
        ("StartContinuous", 5066, 681, "ReadyToContinuousExecution"),
        (None, 5067, 680, "ReadyToContinuousExecutionAuto"),
    ],
    ("Ready", "Initialized"): [
        ("UnprepareRecipe", 5062, 651, "ReadyToInitializedRecipe"),
        (None, 5063, 650, "ReadyToInitializedAuto"),
    ],
    ("Ready", "SingleExecution"): [
        ("StartSingleJob", 5064, 671, "ReadyToSingleExecution"),
        (None, 5065, 670, "ReadyToSingleExecutionAuto"),
    ],
    ("SingleExecution", "Ready"): [
        ("Abort", 5069, 762, "SingleExecutionToReadyAbort"),
        ("Stop", 5068, 761, "SingleExecutionToReadyStop"),
        (None, 5070, 760, "SingleExecutionToReadyAuto"),
    ],
}
# the official effects beyond StateChangedEventType (HasEffect references of the NodeSet), per transition
_EFFECTS: dict[str, str] = {
    "PreoperationalToErrorAuto": "ErrorEventType",
    "OperationalToErrorAuto": "ErrorEventType",  # not in the NodeSet: a lost camera, the agent's error moment
    "ErrorToOperationalAuto": "ErrorResolvedEventType",
    "ReadyToSingleExecution": "JobStartedEventType",
    "ReadyToSingleExecutionAuto": "JobStartedEventType",
    "ReadyToContinuousExecution": "JobStartedEventType",
    "ReadyToContinuousExecutionAuto": "JobStartedEventType",
    "SingleExecutionToReadyStop": "ReadyEventType",
    "SingleExecutionToReadyAbort": "ReadyEventType",
    "SingleExecutionToReadyAuto": "ReadyEventType",
    "ContinuousExecutionToReadyStop": "ReadyEventType",
    "ContinuousExecutionToReadyAbort": "ReadyEventType",
    "ContinuousExecutionToReadyAuto": "ReadyEventType",
    "InitializedToReadyRecipe": "RecipePreparedEventType",
}
#: which method may be called in which state: the states its official transitions leave (HasCause)
ALLOWED_FROM: dict[str, frozenset[str]] = {
    method: frozenset(a for (a, _b), options in _TRANSITIONS.items() if any(c == method for c, *_ in options))
    for method in {c for options in _TRANSITIONS.values() for c, *_ in options if c is not None}
}
_AUTOMATIC_EDGES = {
    (a, b) for (a, b) in _TRANSITIONS if a in model.AUTOMATIC_STATES and b in model.AUTOMATIC_STATES
}


@dataclass
class LineState:
    """Server-side state of one line, on top of what the line reports."""

    halted: bool = False  # Halt called; held until Reset
    preoperational: bool = False  # Reset called; held until SelectModeAutomatic
    unprepared: bool = False  # UnprepareRecipe called; Initialized until PrepareRecipe
    jobs_in_flight: int = 0
    current_job: str = ""
    states: tuple[str, str | None] = ("", None)
    cause: str | None = None  # the method whose call is being applied
    #: Stop/Abort called during SingleExecution: the job completes, then SingleExecutionToReadyStop/Abort
    ending: str | None = None
    #: job ids this server started (StartSingleJob, PLC): their results also get AcquisitionDoneEvent
    started_jobs: set[str] = field(default_factory=set)
    configuration: Any = None  # the LineConfiguration last written to ActiveConfiguration
    last_children: dict[str, Any] = field(default_factory=dict)  # LatestResult children as written


def vision_states(line: LineBackend, st: LineState, *, busy: bool) -> tuple[str, str | None]:
    """The (VisionStateMachine, AutomaticModeStateMachine) states for a line's real state."""
    state = line.state
    if st.halted or state == "stopped":
        return "Halted", None
    if state in ("error", "degraded"):
        return "Error", None
    if state == "starting" or st.preoperational:
        return "Preoperational", None
    if st.unprepared:
        return "Operational", "Initialized"
    if line.mode == "free_run":
        return "Operational", "ContinuousExecution" if state == "running" else "Ready"
    if state == "paused":
        return "Operational", "Initialized"
    return "Operational", "SingleExecution" if busy else "Ready"


def transition(from_state: str, to_state: str, cause: str | None) -> tuple[int, int, str] | None:
    """(NodeId number, TransitionNumber, BrowseName) of the official transition, `cause`'s first."""
    options = _TRANSITIONS.get((from_state, to_state))
    if not options:
        return None
    for wanted in (cause, None):
        for option_cause, nodeid, number, name in options:
            if option_cause == wanted:
                return nodeid, number, name
    return options[0][1:]


def automatic_path(before: str, after: str) -> list[tuple[str, str]]:
    """The official transitions that lead from one AutomaticModeStateMachine state to another
    (Initialized -> Ready -> ContinuousExecution, ...): the shortest chain, [] when equal."""
    paths: dict[str, list[tuple[str, str]]] = {before: []}
    frontier = [before]
    while frontier and after not in paths:
        nxt = []
        for state in frontier:
            for a, b in sorted(_AUTOMATIC_EDGES):
                if a == state and b not in paths:
                    paths[b] = [*paths[state], (a, b)]
                    nxt.append(b)
        frontier = nxt
    return paths.get(after, [(before, after)])


def steps(old: tuple[str, str | None], new: tuple[str, str | None]) -> list[tuple[str, str, str]]:
    """The changes from `old` to `new` (VisionStateMachine, AutomaticModeStateMachine states), one per
    official transition, as (machine "vision" or "automatic", from, to). Entering Operational enters
    the AutomaticModeStateMachine at Initialized (PreoperationalToInitialized from Preoperational, OPC
    40100-1 §8.3.2.1), which then goes on to the line's state by its own transitions."""
    (top0, auto0), (top1, auto1) = old, new
    out: list[tuple[str, str, str]] = []
    if top0 != top1:
        if top1 == "Operational" and top0 == "Preoperational":
            out.append(("vision", top0, "Initialized"))
        elif top0:
            out.append(("vision", top0, top1))
        if top1 == "Operational":
            auto0 = "Initialized"
    if top1 == "Operational" and auto0 and auto1 and auto0 != auto1:
        out.extend(("automatic", a, b) for a, b in automatic_path(auto0, auto1))
    return out


class StateMachines:
    """Writes the state machines of every line and emits their events."""

    def __init__(self, server: Server, types: model.MvTypes) -> None:
        self.server = server
        self.types = types
        self._generators: dict[tuple[str, str], list[Any]] = {}
        self.events_emitted = 0

    async def add_line(self, line: str, nodes: model.VisionSystemNodes) -> None:
        # every generator now: making one later would reset the nodes' EventNotifier (opcua.history)
        for etype in set(_EFFECTS.values()) | {"StateChangedEventType", "AcquisitionDoneEventType"}:
            self._generators[(line, etype)] = [
                await self.server.get_event_generator(self.types.id(etype), nodes.system),
                await self.server.get_event_generator(self.types.id(etype), ua.ObjectIds.Server),
            ]

    async def write(self, nodes: model.VisionSystemNodes, st: LineState, new: tuple[str, str | None]) -> None:
        old = st.states
        st.states = new
        cause, st.cause = st.cause, None
        if not old[0]:  # the first write: the states as they are, no transition
            await self._write_current(nodes.vision, new[0], model.VISION_STATES)
            await self._write_current(nodes.automatic, new[1], model.AUTOMATIC_STATES)
            return
        if old[0] != new[0]:
            await self._write_current(nodes.vision, new[0], model.VISION_STATES)
            # entering Operational enters its sub-state machine at Initialized; leaving it makes the
            # sub-state machine inactive
            await self._write_current(
                nodes.automatic, "Initialized" if new[0] == "Operational" else None, model.AUTOMATIC_STATES
            )
        for machine, before, after in steps(old, new):
            if machine == "automatic":
                await self._write_current(nodes.automatic, after, model.AUTOMATIC_STATES)
            if (before, after) == ("SingleExecution", "Ready") and st.ending:
                cause, st.ending = st.ending, None  # Stop/Abort called while the job ran
            found = transition(before, after, cause)
            if cause is not None and any(c == cause for c, *_ in _TRANSITIONS.get((before, after), [])):
                cause = None  # the method's transition is taken once; what follows is Auto
            sm = nodes.vision if machine == "vision" else nodes.automatic
            await self._transition(nodes, st, sm, before, after, found)
        if new[1] != "SingleExecution":
            st.ending = None

    async def _write_current(
        self, sm: model.StateMachineNodes, state: str | None, numbers: dict[str, int]
    ) -> None:
        if state is None:  # OPC 10000-5 B.4.2: CurrentState of an inactive sub-state machine
            bad = ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadStateNotActive))
            for node in (sm.current, sm.current_id, sm.current_number):
                await self.server.write_attribute_value(node.nodeid, bad)
            return
        mv = self.types.mv
        await self._write(sm.current, ua.LocalizedText(state), ua.VariantType.LocalizedText)
        await self._write(sm.current_id, ua.NodeId(model.STATE_IDS[state], mv), ua.VariantType.NodeId)
        await self._write(sm.current_number, numbers[state], ua.VariantType.UInt32)

    async def _transition(
        self,
        nodes: model.VisionSystemNodes,
        st: LineState,
        sm: model.StateMachineNodes,
        before: str,
        after: str,
        found: tuple[int, int, str] | None,
    ) -> None:
        if found is None:  # no official transition between these two: CurrentState only
            logger.info("opcua: %s: %s -> %s has no OPC 40100 transition", nodes.line, before, after)
            return
        number_id, number, name = found
        tid = ua.NodeId(number_id, self.types.mv)
        now = datetime.now(timezone.utc)
        await self._write(sm.last, ua.LocalizedText(name), ua.VariantType.LocalizedText)
        await self._write(sm.last_id, tid, ua.VariantType.NodeId)
        await self._write(sm.last_number, number, ua.VariantType.UInt32)
        await self._write(sm.last_time, now, ua.VariantType.DateTime)
        await self._write(sm.last_effective_time, now, ua.VariantType.DateTime)
        etypes = ["StateChangedEventType"]
        if name in _EFFECTS:
            etypes.append(_EFFECTS[name])
        for etype in etypes:
            await self._emit(nodes, st, etype, before, after, tid, number, name, now)

    async def _emit(
        self,
        nodes: model.VisionSystemNodes,
        st: LineState,
        etype: str,
        before: str,
        after: str,
        tid: ua.NodeId,
        number: int,
        name: str,
        now: datetime,
    ) -> None:
        mv = self.types.mv
        message = f"{nodes.line}: {before} -> {after}"
        fields: dict[str, tuple[Any, ua.VariantType]] = {}
        if etype in ("StateChangedEventType", "ErrorEventType", "ErrorResolvedEventType"):
            # TransitionEventType's fields (OPC 10000-16 §B.4.16)
            fields = {
                "Transition": (ua.LocalizedText(name), ua.VariantType.LocalizedText),
                "Transition/Id": (tid, ua.VariantType.NodeId),
                "FromState": (ua.LocalizedText(before), ua.VariantType.LocalizedText),
                "FromState/Id": (ua.NodeId(model.STATE_IDS[before], mv), ua.VariantType.NodeId),
                "ToState": (ua.LocalizedText(after), ua.VariantType.LocalizedText),
                "ToState/Id": (ua.NodeId(model.STATE_IDS[after], mv), ua.VariantType.NodeId),
            }
        if etype in ("JobStartedEventType", "ReadyEventType"):
            job = self.types.new("JobIdDataType", Id=st.current_job)
            fields["JobId"] = (job, ua.VariantType.ExtensionObject)
        severity = 700 if etype == "ErrorEventType" else 100
        await self.emit(nodes, etype, fields, message, severity, now)

    async def emit(
        self,
        nodes: model.VisionSystemNodes,
        etype: str,
        fields: dict[str, tuple[Any, ua.VariantType]],
        message: str,
        severity: int,
        time: datetime | None = None,
    ) -> None:
        """One event of `etype` on the line's VisionSystem and on the Server object."""
        gens = self._generators.get((nodes.line, etype))
        if gens is None:
            gens = self._generators[(nodes.line, etype)] = [
                await self.server.get_event_generator(self.types.id(etype), nodes.system),
                await self.server.get_event_generator(self.types.id(etype), ua.ObjectIds.Server),
            ]
        for gen in gens:
            event = gen.event
            for key, (value, vtype) in fields.items():
                event.add_property(key, value, vtype)
            event.SourceNode = nodes.system.nodeid
            event.SourceName = nodes.line
            event.Severity = severity
            classify(event)
            await gen.trigger(time_attr=time, message=message)
        self.events_emitted += 1

    async def _write(self, node: Any, value: Any, vtype: ua.VariantType) -> None:
        await self.server.write_attribute_value(node.nodeid, ua.DataValue(ua.Variant(value, vtype)))


def classify(event: Any) -> None:
    """BaseEventType's optional classification: not a condition, so the base class, no subclasses
    (a client that selects every field then gets no null)."""
    event.add_property(
        "ConditionClassId", ua.NodeId(ua.ObjectIds.BaseConditionClassType), ua.VariantType.NodeId
    )
    event.add_property(
        "ConditionClassName", ua.LocalizedText("BaseConditionClassType"), ua.VariantType.LocalizedText
    )
    event.add_property("ConditionSubClassId", [], ua.VariantType.NodeId)
    event.add_property("ConditionSubClassName", [], ua.VariantType.LocalizedText)
