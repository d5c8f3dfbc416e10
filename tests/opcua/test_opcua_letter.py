"""OPC 40100 to the letter (issue 28, items 15-19), on a real server with a real asyncua client.

- every Mandatory declaration of VisionSystemType (and of the types of its members) exists on a line's
  instance, with the declared ValueRank/ArrayDimensions; so do the optional members the server serves;
- SelectModeAutomatic enters the AutomaticModeStateMachine at Initialized (PreoperationalToInitialized);
  outside Operational its CurrentState reads Bad_StateNotActive;
- calls the NodeSet has no transition for are refused; Stop/Abort during SingleExecution take
  SingleExecutionToReadyStop/Abort;
- GetResultListFiltered pages are in CreationTime order, oldest first, as docs/opcua.md says.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from asyncua import Client, ua

from opcua.methods import Err
from tests.opcua import official
from tests.opcua.conftest import RunningServer, demo_profile_server
from tests.opcua.lines import make_result
from tests.opcua.opcua_helpers import job_args, namespaces, vision_node, wait_value
from tests.opcua.test_opcua_states import _subscribe

CAUSE = (ua.Variant(1, ua.VariantType.Int32), ua.Variant("letter", ua.VariantType.String))
_MANDATORY, _HAS_COMPONENT, _HAS_PROPERTY, _HAS_TYPE = "i=78", "i=47", "i=46", "i=40"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server of its own: these tests halt, reset and hold its lines."""
    root = tmp_path_factory.mktemp("letter")
    with demo_profile_server(root, letter1="triggered", letterfree="free_run", order1="triggered") as running:
        yield running


# -- item 15, 16: every declaration on the instance ---------------------------------------------------
def _declarations(model: official.OfficialModel, node: official.OfficialNode) -> list[official.OfficialNode]:
    """The instance declarations below a type or declaration: its own children, and those of its
    type definition and that type's supertypes where they are in the Machine Vision NodeSet."""
    def children(of: official.OfficialNode) -> list[official.OfficialNode]:
        targets = of.targets(_HAS_COMPONENT) + of.targets(_HAS_PROPERTY)
        return [model.nodes[t] for t in targets if t in model.nodes]

    out = children(node)
    types = node.targets(_HAS_TYPE) if node.node_class in ("Object", "Variable") else []
    while types and types[0] in model.nodes:
        out += children(model.nodes[types[0]])
        types = model.nodes[types[0]].targets("i=45", forward=False)
    return out


async def _attribute(node, attr: ua.AttributeIds):
    (value,) = await node.read_attributes([attr])
    return value.Value.Value


@pytest.mark.skipif(not official.NODESET.exists(), reason=official.SKIP_REASON)
async def test_every_declaration_of_vision_system_type_on_the_instance(server):
    model = official.load()
    root = model.by_name("VisionSystemType", "ObjectType")
    async with Client(server.url, timeout=30) as client:
        ns = await namespaces(client)
        missing: list[str] = []
        wrong: list[str] = []
        checked = 0

        async def walk(decl: official.OfficialNode, instance, path: str) -> None:
            nonlocal checked
            for child in _declarations(model, decl):
                qname = ua.QualifiedName(child.name, ns.mv if child.browse_name.startswith("1:") else 0)
                where = f"{path}/{child.name}"
                try:
                    served = await instance.get_child(qname)
                except ua.UaError:
                    if model.modelling_rule(child) == _MANDATORY:
                        missing.append(f"{where} ({child.nodeid})")
                    continue
                checked += 1
                if child.node_class == "Variable":
                    rank = await _attribute(served, ua.AttributeIds.ValueRank)
                    if rank != child.value_rank:
                        wrong.append(f"{where}: ValueRank {rank}, declared {child.value_rank}")
                    if child.array_dimensions is not None:
                        dims = await _attribute(served, ua.AttributeIds.ArrayDimensions)
                        if list(dims or []) != child.array_dimensions:
                            wrong.append(f"{where}: ArrayDimensions {dims}, not {child.array_dimensions}")
                await walk(child, served, where)

        await walk(root, await vision_node(client, "letter1"), "letter1")
        sm = await vision_node(client, "letter1", "mv:VisionStateMachine")
        numbers = {
            state: await (await sm.get_child([f"{ns.mv}:{state}", "0:StateNumber"])).read_value()
            for state in ("Preoperational", "Halted", "Error", "Operational")
        }
    assert missing == []
    assert wrong == []
    assert checked > 134  # the 134 Mandatory declarations and the optional members served
    assert numbers == {"Preoperational": 1, "Halted": 2, "Error": 3, "Operational": 4}


# -- item 17: Initialized first; Bad_StateNotActive outside Operational --------------------------------
def _changed(name: str, line: str):
    return lambda e: e.Transition == ua.LocalizedText(name) and e.SourceName == line


async def test_select_mode_automatic_enters_initialized_first(server):
    async with Client(server.url, timeout=30) as client:
        await client.load_data_type_definitions()
        ns = await namespaces(client)
        ev = await _subscribe(client, "TransitionEventType/StateChangedEventType", "JobStartedEventType")
        changes = ev["StateChangedEventType"]
        for line, final in (("letter1", "Ready"), ("letterfree", "ContinuousExecution")):
            sm = await vision_node(client, line, "mv:VisionStateMachine")
            auto = await sm.get_child(f"{ns.mv}:AutomaticModeStateMachine")
            auto_state = await auto.get_child("0:CurrentState")
            await wait_value(auto_state, ua.LocalizedText(final))

            assert await sm.call_method(f"{ns.mv}:Halt", *CAUSE) == Err.OK
            await changes.wait_for(_changed("OperationalToHalted", line))
            inactive = await auto_state.read_data_value(raise_on_bad_status=False)
            assert inactive.StatusCode.value == ua.StatusCodes.BadStateNotActive
            state_id = await (await auto_state.get_child("0:Id")).read_data_value(raise_on_bad_status=False)
            assert state_id.StatusCode.value == ua.StatusCodes.BadStateNotActive

            assert await sm.call_method(f"{ns.mv}:Reset", *CAUSE) == Err.OK
            await changes.wait_for(_changed("HaltedToPreoperational", line))
            inactive = await auto_state.read_data_value(raise_on_bad_status=False)
            assert inactive.StatusCode.value == ua.StatusCodes.BadStateNotActive

            first = len(changes.items)
            assert await sm.call_method(f"{ns.mv}:SelectModeAutomatic") == Err.OK
            await changes.wait_for(_changed("InitializedToReadyAuto", line))
            if final == "ContinuousExecution":
                await changes.wait_for(_changed("ReadyToContinuousExecutionAuto", line))
                await ev["JobStartedEventType"].wait_for(lambda e, _l=line: e.SourceName == _l)
            await wait_value(auto_state, ua.LocalizedText(final))
            mine = [e for e in changes.items[first:] if e.SourceName == line]
            # on the Server object and the VisionSystem alike: one event per official transition, in order
            names = [e.Transition.Text for e in mine]
            expected = ["PreoperationalToInitialized", "InitializedToReadyAuto"]
            if final == "ContinuousExecution":
                expected.append("ReadyToContinuousExecutionAuto")
            assert names == expected
            entered = mine[0]
            assert getattr(entered, "Transition/Id") == ua.NodeId(5035, ns.mv)
            assert entered.FromState == ua.LocalizedText("Preoperational")
            assert entered.ToState == ua.LocalizedText("Initialized")
            assert getattr(entered, "ToState/Id") == ua.NodeId(5056, ns.mv)
            last = await sm.get_child("0:LastTransition")
            assert await (await last.get_child("0:Number")).read_value() == 151
            assert await (await last.get_child("0:Id")).read_value() == ua.NodeId(5035, ns.mv)
            assert (await auto_state.read_data_value()).StatusCode.is_good()


# -- item 18: no transition, no call; Stop/Abort during SingleExecution --------------------------------
async def test_calls_without_a_transition_are_refused(server):
    line = server.lines["letter1"]
    async with Client(server.url, timeout=30) as client:
        await client.load_data_type_definitions()
        ns = await namespaces(client)
        ev = await _subscribe(client, "TransitionEventType/StateChangedEventType", "ReadyEventType")
        changes = ev["StateChangedEventType"]
        sm = await vision_node(client, "letter1", "mv:VisionStateMachine")
        auto = await sm.get_child(f"{ns.mv}:AutomaticModeStateMachine")
        top_state = await sm.get_child("0:CurrentState")
        auto_state = await auto.get_child("0:CurrentState")
        await wait_value(auto_state, ua.LocalizedText("Ready"))

        # Halt while Halted, Reset in Preoperational: no transition, refused, nothing changes
        assert await sm.call_method(f"{ns.mv}:Halt", *CAUSE) == Err.OK
        await wait_value(top_state, ua.LocalizedText("Halted"))
        assert await sm.call_method(f"{ns.mv}:Halt", *CAUSE) == Err.NOT_READY
        assert await sm.call_method(f"{ns.mv}:Reset", *CAUSE) == Err.OK
        await wait_value(top_state, ua.LocalizedText("Preoperational"))
        assert await sm.call_method(f"{ns.mv}:Reset", *CAUSE) == Err.NOT_READY
        assert await sm.call_method(f"{ns.mv}:Halt", *CAUSE) == Err.OK  # PreoperationalToHalted exists
        await changes.wait_for(_changed("PreoperationalToHalted", "letter1"))
        assert await sm.call_method(f"{ns.mv}:Reset", *CAUSE) == Err.OK
        assert await sm.call_method(f"{ns.mv}:SelectModeAutomatic") == Err.OK
        await wait_value(auto_state, ua.LocalizedText("Ready"))
        assert await sm.call_method(f"{ns.mv}:SelectModeAutomatic") == Err.NOT_READY

        for how, number, node_id in (("Stop", 761, 5068), ("Abort", 762, 5069)):
            line.release.clear()  # the job stays in flight
            try:
                job, error = await auto.call_method(f"{ns.mv}:StartSingleJob", *job_args(f"HOLD-{how}"))
                assert error == Err.OK
                await wait_value(auto_state, ua.LocalizedText("SingleExecution"))
                # a second job while one runs: ReadyToSingleExecution only leaves Ready
                second, error = await auto.call_method(f"{ns.mv}:StartSingleJob", *job_args("SECOND"))
                assert (second.Id, error) == ("", Err.NOT_READY)
                assert await auto.call_method(f"{ns.mv}:{how}", *CAUSE) == Err.OK
            finally:
                line.release.set()  # the inspection is not cut off: it completes, then Ready
            event = await changes.wait_for(_changed(f"SingleExecutionToReady{how}", "letter1"))
            assert getattr(event, "Transition/Id") == ua.NodeId(node_id, ns.mv)
            ready = await ev["ReadyEventType"].wait_for(lambda e, _j=job.Id: e.JobId.Id == _j)
            assert ready.SourceName == "letter1"
            last = await auto.get_child("0:LastTransition")
            await wait_value(await last.get_child("0:Number"), number)
            assert not [e for e in changes.items if e.Transition.Text == "SingleExecutionToReadyAuto"]
        assert [t["part_id"] for t in line.triggers] == ["HOLD-Stop", "HOLD-Abort"]  # SECOND never ran

        # Stop outside an execution state: no transition
        assert await auto.call_method(f"{ns.mv}:Stop", *CAUSE) == Err.NOT_READY

        # queueing behind a running job is a site option, off by default
        config = server.server.vision.config
        config.queue_single_jobs = True
        line.release.clear()
        try:
            _first, error = await auto.call_method(f"{ns.mv}:StartSingleJob", *job_args("Q-1"))
            assert error == Err.OK
            await wait_value(auto_state, ua.LocalizedText("SingleExecution"))
            queued, error = await auto.call_method(f"{ns.mv}:StartSingleJob", *job_args("Q-2"))
            assert error == Err.OK and queued.Id
        finally:
            config.queue_single_jobs = False
            line.release.set()
        await wait_value(auto_state, ua.LocalizedText("Ready"))


# -- item 19: GetResultListFiltered in CreationTime order ---------------------------------------------
async def test_result_list_is_in_creation_time_order_across_pages(server):
    """Two inferences in flight journal their parts in the order they finish, so journal order and
    inspection time can differ; the list is oldest first by CreationTime, the field a client sorts on."""
    base = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
    offsets = [0, 5, 2, 9, 1, 7, 3, 8, 4, 6]  # seconds: journaled in this order
    stored = [
        server.journal.append(
            make_result("order1", part_id=f"ORD-{i}").model_copy(
                update={"timestamp": base + timedelta(seconds=s)}
            )
        )
        for i, s in enumerate(offsets)
    ]
    async with Client(server.url, timeout=30) as client:
        await client.load_data_type_definitions()
        ns = await namespaces(client)
        results = await vision_node(client, "order1", "mv:ResultManagement")
        got = []
        start = 0
        while True:
            complete, count, _handle, page, error = await results.call_method(
                f"{ns.mv}:GetResultListFiltered",
                ua.Variant(0, ua.VariantType.Int32),
                ua.MeasIdDataType(Id=""),
                ua.PartIdDataType(Id=""),
                ua.RecipeIdExternalDataType(Id=""),
                ua.RecipeIdInternalDataType(Id=""),
                ua.ConfigurationIdDataType(Id="", Version=""),
                ua.ConfigurationIdDataType(Id="", Version=""),
                ua.ProductIdDataType(Id=""),
                ua.JobIdDataType(Id=""),
                ua.Variant(3, ua.VariantType.UInt32),
                ua.Variant(start, ua.VariantType.UInt32),
                ua.Variant(0, ua.VariantType.Int32),
            )
            assert error == Err.OK and count == len(page)
            got.extend(page)
            start += count
            if complete:
                break
    times = [r.CreationTime for r in got]
    assert times == sorted(times)
    assert [r.ResultId.Id for r in got] == [
        r.result_id for r in sorted(stored, key=lambda r: (r.timestamp, r.seq))
    ]
    assert [r.PartId.Id for r in got][:3] == ["ORD-0", "ORD-4", "ORD-2"]
