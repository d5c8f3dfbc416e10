"""The Machine Vision model over TCP with a real asyncua client (demo profile server)."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from asyncua import Client, ua

from opcua.config import MACHINE_VISION_NS
from tests.opcua.lines import make_result
from tests.opcua.opcua_helpers import APP_NS, empty_args, namespaces, vision_node, wait_value

REPO = Path(__file__).resolve().parents[2]


async def test_standard_browse_paths_and_types(demo_server):
    async with Client(demo_server.url, timeout=30) as client:
        ns = await namespaces(client)
        assert ns.mv > 0 and ns.app > 0
        system = await vision_node(client, "line1")
        type_def = await system.read_type_definition()
        assert (await client.get_node(type_def).read_browse_name()) == ua.QualifiedName(
            "VisionSystemType", ns.mv
        )
        for path in (
            ("mv:VisionStateMachine", "mv:Halt"),
            ("mv:VisionStateMachine", "mv:Reset"),
            ("mv:VisionStateMachine", "mv:AutomaticModeStateMachine", "mv:StartSingleJob"),
            ("mv:VisionStateMachine", "mv:AutomaticModeStateMachine", "mv:StartContinuous"),
            ("mv:VisionStateMachine", "mv:AutomaticModeStateMachine", "mv:Stop"),
            ("mv:VisionStateMachine", "mv:AutomaticModeStateMachine", "mv:Abort"),
            ("mv:RecipeManagement", "mv:PrepareRecipe"),
            ("mv:RecipeManagement", "mv:GetRecipeListFiltered"),
            ("mv:ResultManagement", "mv:GetResultById"),
            ("mv:ResultManagement", "mv:GetResultListFiltered"),
        ):
            node = await vision_node(client, "line1", *path)
            assert await node.read_node_class() == ua.NodeClass.Method, path
        start = await vision_node(
            client, "line1", "mv:VisionStateMachine", "mv:AutomaticModeStateMachine", "mv:StartSingleJob"
        )
        inputs = await (await start.get_child("0:InputArguments")).read_value()
        assert [a.Name for a in inputs] == ["MeasId", "PartId", "RecipeId", "ProductId", "Parameters"]
        outputs = await (await start.get_child("0:OutputArguments")).read_value()
        assert [a.Name for a in outputs] == ["JobId", "Error"]

        latest = await vision_node(client, "line1", "mv:ResultManagement", "mv:Results", "app:LatestResult")
        latest_type = client.get_node(await latest.read_type_definition())
        assert await latest_type.read_browse_name() == ua.QualifiedName("ResultType", ns.mv)
        current = await (await vision_node(client, "line1", "mv:VisionStateMachine")).get_child(
            "0:CurrentState"
        )
        assert (await current.read_value()).Text == "Operational"
        auto = await vision_node(client, "line1", "mv:VisionStateMachine", "mv:AutomaticModeStateMachine")
        auto_state = await auto.get_child("0:CurrentState")
        assert (await auto_state.read_value()).Text == "Ready"
        assert await (await auto_state.get_child("0:Number")).read_value() == 6
        # CurrentState/Id points at the state declared on the type, which carries its StateNumber
        ready = client.get_node(await (await auto_state.get_child("0:Id")).read_value())
        assert await ready.read_browse_name() == ua.QualifiedName("Ready", ns.mv)
        assert await (await ready.get_child("0:StateNumber")).read_value() == 6
        auto_type = await client.get_node(ua.ObjectIds.FiniteStateMachineType).get_child(
            f"{ns.mv}:VisionAutomaticModeStateMachineType"
        )
        auto_node = await vision_node(
            client, "line1", "mv:VisionStateMachine", "mv:AutomaticModeStateMachine"
        )
        assert auto_node.nodeid == ua.NodeId("line1.VisionStateMachine.AutomaticModeStateMachine", ns.app)
        assert (await auto_node.read_type_definition()) == auto_type.nodeid
        declared = await auto_type.get_child(f"{ns.mv}:StartSingleJob")  # the type declares its members
        rule = await declared.get_referenced_nodes(refs=ua.ObjectIds.HasModellingRule)
        assert [r.nodeid for r in rule] == [ua.NodeId(ua.ObjectIds.ModellingRule_Mandatory)]
        declared_inputs = await (await declared.get_child("0:InputArguments")).read_value()
        assert [a.Name for a in declared_inputs] == [a.Name for a in inputs]

        free_auto = await vision_node(
            client, "free1", "mv:VisionStateMachine", "mv:AutomaticModeStateMachine"
        )
        assert (
            await (await free_auto.get_child("0:CurrentState")).read_value()
        ).Text == "ContinuousExecution"


async def _subscribe_events(
    client: Client, source, etype, received: list, got: asyncio.Event, wanted: int = 1
):
    class Handler:
        def event_notification(self, event):
            received.append(event)
            if len(received) >= wanted:
                got.set()

    sub = await client.create_subscription(10, Handler())
    await sub.subscribe_events(source, etype)
    return sub


async def test_start_single_job_result_and_event_on_server_object(demo_server):
    line = demo_server.lines["line1"]
    async with Client(demo_server.url, timeout=30) as client:
        await client.load_data_type_definitions()
        ns = await namespaces(client)
        etype = await client.nodes.base_event_type.get_child(f"{ns.mv}:ResultReadyEventType")
        on_server, on_system = [], []
        got_server, got_system = asyncio.Event(), asyncio.Event()
        await _subscribe_events(client, client.nodes.server, etype, on_server, got_server)
        await _subscribe_events(client, await vision_node(client, "line1"), etype, on_system, got_system)

        auto = await vision_node(client, "line1", "mv:VisionStateMachine", "mv:AutomaticModeStateMachine")
        job_id, error = await auto.call_method(
            f"{ns.mv}:StartSingleJob",
            ua.MeasIdDataType(Id="M-1"),
            ua.PartIdDataType(Id="P-7X"),
            ua.RecipeIdExternalDataType(Id="strict"),
            ua.ProductIdDataType(Id="PRD-1"),
            empty_args(),
        )
        assert error == 0 and job_id.Id
        await asyncio.wait_for(got_server.wait(), 10)
        await asyncio.wait_for(got_system.wait(), 10)

    event = on_server[-1]
    assert event.JobId.Id == job_id.Id
    fields = (
        "ResultId",
        "IsPartial",
        "IsSimulated",
        "ResultState",
        "MeasId",
        "PartId",
        "ExternalRecipeId",
        "InternalRecipeId",
        "ProductId",
        "ExternalConfigurationId",
        "InternalConfigurationId",
        "JobId",
        "CreationTime",
        "ProcessingTimes",
        "ResultContent",
        "Message",
        "SourceNode",
        "Time",
    )
    every = event.get_event_props_as_fields_dict()  # every field the subscription selected
    assert set(fields) <= set(every)
    nulls = [name for name, variant in every.items() if variant.Value is None]
    assert nulls == [], f"null event fields: {nulls}"
    assert event.PartId.Id == "P-7X" and event.MeasId.Id == "M-1" and event.ProductId.Id == "PRD-1"
    assert event.InternalRecipeId.Id == "strict" and event.ResultState == 1
    content = event.ResultContent[0].Value  # BaseDataType[]: an array of Variants
    assert content.Verdict == "NG" and content.DefectCount == 1 and content.Defects[0].ClassName == "scratch"
    stored = demo_server.journal.get_by_id(event.ResultId.Id)
    assert stored is not None and stored.job_id == job_id.Id and stored.part_id == "P-7X"
    assert json.loads(content.BodyJson)["result_id"] == stored.result_id
    assert on_system[-1].ResultId.Id == event.ResultId.Id
    assert line.triggers[-1]["recipe"] == "strict"


def test_latest_result_decodes_in_a_fresh_client_process(demo_server):
    """A client that knows nothing of our types decodes LatestResult after load_data_type_definitions()."""
    body = make_result("line1", part_id="FRESH-1X", job_id="job-fresh")
    stored = demo_server.journal.append(body)
    demo_server.server.submit_result(stored)
    script = textwrap.dedent(f"""
        import asyncio, json
        from asyncua import Client, ua
        async def main():
            async with Client({demo_server.url!r}) as c:
                assert not hasattr(ua, "ResultDataType")
                await c.load_data_type_definitions()
                mv = await c.get_namespace_index({MACHINE_VISION_NS!r})
                app = await c.get_namespace_index({APP_NS!r})
                node = await c.nodes.objects.get_child([f"{{app}}:line1", f"{{mv}}:ResultManagement",
                                                        f"{{mv}}:Results", f"{{app}}:LatestResult"])
                for _ in range(200):
                    v = await node.read_value()
                    if v.PartId.Id == "FRESH-1X":
                        break
                    await asyncio.sleep(0.05)
                content = v.ResultContent[0].Value
                print(json.dumps({{"type": type(v).__name__, "result_id": v.ResultId.Id,
                                  "part": v.PartId.Id, "job": v.JobId.Id, "verdict": content.Verdict,
                                  "defects": content.DefectCount, "recipe": v.InternalRecipeId.Id,
                                  "config_version": v.ExternalConfigurationId.Version,
                                  "area_mm2_nan": content.Defects[0].AreaMm2 != content.Defects[0].AreaMm2,
                                  "processing": v.ProcessingTimes.ProcessingDuration}}))
        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    decoded = json.loads(out.stdout.strip().splitlines()[-1])
    assert decoded == {
        "type": "ResultDataType",
        "result_id": stored.result_id,
        "part": "FRESH-1X",
        "job": "job-fresh",
        "verdict": "NG",
        "defects": 1,
        "recipe": "default",
        "config_version": "7",
        "area_mm2_nan": True,
        "processing": 7.0,
    }


async def test_result_history_from_the_journal(demo_server):
    journal = demo_server.journal
    ids = [
        journal.append(make_result("line1", part_id=f"HIST-{i}", meas_id="batch-9")).result_id
        for i in range(5)
    ]
    journal.append(make_result("plc1", part_id="HIST-other-line", meas_id="batch-9"))
    async with Client(demo_server.url, timeout=30) as client:
        await client.load_data_type_definitions()
        ns = await namespaces(client)
        results = await vision_node(client, "line1", "mv:ResultManagement")

        _handle, result, error = await results.call_method(
            f"{ns.mv}:GetResultById", ua.ResultIdDataType(Id=ids[2]), ua.Variant(0, ua.VariantType.Int32)
        )
        assert error == 0 and result.PartId.Id == "HIST-2" and result.ResultId.Id == ids[2]
        _, missing, error = await results.call_method(
            f"{ns.mv}:GetResultById", ua.ResultIdDataType(Id="nope"), ua.Variant(0, ua.VariantType.Int32)
        )
        assert error < 0 and missing.ResultState == 0

        async def page(start: int, count: int):
            return await results.call_method(
                f"{ns.mv}:GetResultListFiltered",
                ua.Variant(0, ua.VariantType.Int32),
                ua.MeasIdDataType(Id="batch-9"),
                ua.PartIdDataType(Id=""),
                ua.RecipeIdExternalDataType(Id=""),
                ua.RecipeIdInternalDataType(Id=""),
                ua.ConfigurationIdDataType(Id=""),
                ua.ConfigurationIdDataType(Id=""),
                ua.ProductIdDataType(Id=""),
                ua.JobIdDataType(Id=""),
                ua.Variant(count, ua.VariantType.UInt32),
                ua.Variant(start, ua.VariantType.UInt32),
                ua.Variant(0, ua.VariantType.Int32),
            )

        complete, count, _, first, error = await page(0, 3)
        assert (complete, count, error) == (False, 3, 0)
        complete, count, _, rest, error = await page(3, 3)
        assert (complete, count, error) == (True, 2, 0)
        assert [r.ResultId.Id for r in [*first, *rest]] == ids  # oldest first, only this line


async def test_recipes_prepare_and_list(demo_server):
    line = demo_server.lines["line1"]
    async with Client(demo_server.url, timeout=30) as client:
        await client.load_data_type_definitions()
        ns = await namespaces(client)
        recipes = await vision_node(client, "line1", "mv:RecipeManagement")

        async def listing(prepared: int):
            return await recipes.call_method(
                f"{ns.mv}:GetRecipeListFiltered",
                ua.RecipeIdExternalDataType(Id=""),
                ua.ProductIdDataType(Id=""),
                ua.Variant(prepared, ua.VariantType.Int32),
                ua.Variant(0, ua.VariantType.UInt32),
                ua.Variant(0, ua.VariantType.UInt32),
                ua.Variant(0, ua.VariantType.Int32),
            )

        complete, _count, _, items, error = await listing(2)
        assert complete and error == 0 and [r.Id for r in items] == ["default", "strict"]
        out, completed, error = await recipes.call_method(
            f"{ns.mv}:PrepareRecipe",
            ua.RecipeIdExternalDataType(Id="strict"),
            ua.RecipeIdInternalDataType(Id=""),
        )
        assert (out.Id, completed, error) == ("strict", True, 0) and line.active_recipe == "strict"
        _, _, _, prepared, _ = await listing(1)
        assert [r.Id for r in prepared] == ["strict"]
        _, completed, error = await recipes.call_method(
            f"{ns.mv}:PrepareRecipe",
            ua.RecipeIdExternalDataType(Id="no-such"),
            ua.RecipeIdInternalDataType(Id=""),
        )
        assert error == -2 and completed is False and line.active_recipe == "strict"
        await recipes.call_method(
            f"{ns.mv}:PrepareRecipe",
            ua.RecipeIdExternalDataType(Id="default"),
            ua.RecipeIdInternalDataType(Id=""),
        )


async def test_state_machine_follows_the_line_and_halt_reset(demo_server):
    line = demo_server.lines["line1"]
    async with Client(demo_server.url, timeout=30) as client:
        ns = await namespaces(client)
        sm = await vision_node(client, "line1", "mv:VisionStateMachine")
        top = await sm.get_child("0:CurrentState")
        auto = await (await sm.get_child(f"{ns.mv}:AutomaticModeStateMachine")).get_child("0:CurrentState")
        line.pause()
        await wait_value(auto, ua.LocalizedText("Initialized"))
        line.resume()
        await wait_value(auto, ua.LocalizedText("Ready"))
        line.state = "degraded"  # a camera lost, without telling listeners: the poll catches it
        await wait_value(top, ua.LocalizedText("Error"))
        line.state = "running"
        await wait_value(top, ua.LocalizedText("Operational"))

        cause = (ua.Variant(7, ua.VariantType.Int32), ua.Variant("maintenance", ua.VariantType.String))
        assert await sm.call_method(f"{ns.mv}:Halt", *cause) == 0
        await wait_value(top, ua.LocalizedText("Halted"))
        assert line.state == "paused"
        automatic = await sm.get_child(f"{ns.mv}:AutomaticModeStateMachine")
        job, error = await automatic.call_method(
            f"{ns.mv}:StartSingleJob",
            ua.MeasIdDataType(Id=""),
            ua.PartIdDataType(Id="P"),
            ua.RecipeIdExternalDataType(Id=""),
            ua.ProductIdDataType(Id=""),
            empty_args(),
        )
        assert error == -1 and job.Id == ""
        assert await sm.call_method(f"{ns.mv}:Reset", *cause) == 0  # Halted -> Preoperational, held
        await wait_value(top, ua.LocalizedText("Preoperational"))
        assert line.state == "paused"
        assert await sm.call_method(f"{ns.mv}:SelectModeAutomatic") == 0  # -> Operational
        await wait_value(top, ua.LocalizedText("Operational"))
        await wait_value(auto, ua.LocalizedText("Ready"))
        assert line.state == "running"


async def test_every_result_reaches_a_subscriber_while_the_server_loop_is_blocked(demo_server):
    """submit_result() never waits for the server: the agent's threads go on while its loop is stuck."""
    n = 300
    async with Client(demo_server.url, timeout=30) as client:
        await client.load_data_type_definitions()
        ns = await namespaces(client)
        etype = await client.nodes.base_event_type.get_child(f"{ns.mv}:ResultReadyEventType")
        received: list = []
        done = asyncio.Event()
        await _subscribe_events(client, client.nodes.server, etype, received, done, wanted=n)

        loop_released = threading.Event()
        loop_blocked = threading.Event()

        def block_server_loop() -> None:  # runs ON the server loop: nothing there moves meanwhile
            loop_blocked.set()
            loop_released.wait(30)

        demo_server.server.vision._loop.call_soon_threadsafe(block_server_loop)
        assert loop_blocked.wait(10)
        bodies = []
        for i in range(n):
            stored = demo_server.journal.append(make_result("line1", part_id=f"BURST-{i}"))
            bodies.append(stored)
            demo_server.server.submit_result(stored)
        assert not loop_released.is_set()  # all n submitted while the server loop could not run
        loop_released.set()
        await asyncio.wait_for(done.wait(), 30)
        latest = await vision_node(client, "line1", "mv:ResultManagement", "mv:Results", "app:LatestResult")
        value = await latest.read_value()
    burst = [e.PartId.Id for e in received if e.PartId.Id.startswith("BURST-")]
    assert burst == [f"BURST-{i}" for i in range(n)]  # none lost, in order
    assert value.ResultId.Id == bodies[-1].result_id
    assert not math.isnan(value.ProcessingTimes.ProcessingDuration)


async def test_free_run_line_stop_and_start_continuous(demo_server):
    line = demo_server.lines["free1"]
    async with Client(demo_server.url, timeout=30) as client:
        await client.load_data_type_definitions()
        ns = await namespaces(client)
        auto = await vision_node(client, "free1", "mv:VisionStateMachine", "mv:AutomaticModeStateMachine")
        state = await auto.get_child("0:CurrentState")
        await wait_value(state, ua.LocalizedText("ContinuousExecution"))
        stop_cause = (ua.Variant(0, ua.VariantType.Int32), ua.Variant("shift end", ua.VariantType.String))
        assert await auto.call_method(f"{ns.mv}:Stop", *stop_cause) == 0
        await wait_value(state, ua.LocalizedText("Ready"))
        assert line.state == "paused"
        start_args = (
            ua.MeasIdDataType(Id=""),
            ua.PartIdDataType(Id=""),
            ua.RecipeIdExternalDataType(Id=""),
            ua.ProductIdDataType(Id=""),
            empty_args(),
        )
        job, error = await auto.call_method(f"{ns.mv}:StartSingleJob", *start_args)
        assert error == -3 and job.Id == ""  # single jobs are for triggered lines
        continuous_args = (
            ua.MeasIdDataType(Id="M-7"),
            ua.PartIdDataType(Id="LOT-7"),
            ua.RecipeIdExternalDataType(Id=""),
            ua.ProductIdDataType(Id="bracket"),
            empty_args(),
        )
        job, error = await auto.call_method(f"{ns.mv}:StartContinuous", *continuous_args)
        assert error == 0 and job.Id
        await wait_value(state, ua.LocalizedText("ContinuousExecution"))
        assert line.state == "running"
        # the job's ids reach the line, which puts them into every result of the job
        assert line.continuous_job == {
            "meas_id": "M-7", "part_id": "LOT-7", "product_id": "bracket", "job_id": job.Id
        }

        # a result of free1 lands on free1 only
        stored = demo_server.journal.append(make_result("free1", part_id="FREE-1"))
        demo_server.server.submit_result(stored)
        free_latest = await vision_node(
            client, "free1", "mv:ResultManagement", "mv:Results", "app:LatestResult"
        )
        for _ in range(200):
            if (await free_latest.read_value()).PartId.Id == "FREE-1":
                break
            await asyncio.sleep(0.02)
        assert (await free_latest.read_value()).ResultId.Id == stored.result_id
        plc_latest = await vision_node(
            client, "plc1", "mv:ResultManagement", "mv:Results", "app:LatestResult"
        )
        assert (await plc_latest.read_value()).PartId.Id != "FREE-1"
        triggered = await vision_node(
            client, "line1", "mv:VisionStateMachine", "mv:AutomaticModeStateMachine"
        )
        _, error = await triggered.call_method(f"{ns.mv}:StartContinuous", *start_args)
        assert error == -3
