"""The state machines as OPC 40100-1 §8 specifies them: LastTransition, transition events, the
Machine Vision events, and the ResultType children of LatestResult kept in step with its value."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap

import pytest
from asyncua import Client, ua

from opcua.config import MACHINE_VISION_NS
from tests.opcua.lines import make_result
from tests.opcua.opcua_helpers import APP_NS, empty_args, namespaces, vision_node, wait_value

CAUSE = (ua.Variant(3, ua.VariantType.Int32), ua.Variant("test", ua.VariantType.String))


class Events:
    def __init__(self) -> None:
        self.items: list = []
        self.changed = asyncio.Event()

    def event_notification(self, event) -> None:
        self.items.append(event)
        self.changed.set()

    async def wait_for(self, predicate, timeout: float = 15.0):
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for event in self.items:
                if predicate(event):
                    return event
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no such event in {self.items}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


async def _subscribe(client: Client, *type_names: str) -> dict[str, Events]:
    ns = await namespaces(client)
    out = {}
    for name in type_names:
        handler = Events()
        etype = await client.nodes.base_event_type.get_child(
            [f"0:{p}" if p in ("TransitionEventType",) else f"{ns.mv}:{p}" for p in name.split("/")]
        )
        sub = await client.create_subscription(10, handler)
        await sub.subscribe_events(client.nodes.server, etype)
        out[name.split("/")[-1]] = handler
    return out


async def test_transitions_last_transition_and_events(demo_server):
    line = demo_server.lines["line1"]
    async with Client(demo_server.url, timeout=30) as client:
        await client.load_data_type_definitions()
        ns = await namespaces(client)
        ev = await _subscribe(
            client,
            "TransitionEventType/StateChangedEventType",
            "TransitionEventType/ErrorEventType",
            "TransitionEventType/ErrorResolvedEventType",
            "JobStartedEventType",
            "ReadyEventType",
            "AcquisitionDoneEventType",
        )
        sm = await vision_node(client, "line1", "mv:VisionStateMachine")
        top = await sm.get_child("0:CurrentState")
        last = await sm.get_child("0:LastTransition")
        auto = await sm.get_child(f"{ns.mv}:AutomaticModeStateMachine")
        auto_state = await auto.get_child("0:CurrentState")
        await wait_value(top, ua.LocalizedText("Operational"))

        def changed(name: str):
            return lambda e: e.Transition == ua.LocalizedText(name) and e.SourceName == "line1"

        # Halt: OperationalToHalted (421), by the method
        assert await sm.call_method(f"{ns.mv}:Halt", *CAUSE) == 0
        event = await ev["StateChangedEventType"].wait_for(changed("OperationalToHalted"))
        assert event.FromState == ua.LocalizedText("Operational") and event.ToState == ua.LocalizedText(
            "Halted"
        )
        assert await (await last.get_child("0:Number")).read_value() == 421
        assert await (await last.get_child("0:Id")).read_value() == ua.NodeId(5049, ns.mv)
        assert (await last.read_value()).Text == "OperationalToHalted"
        assert await (await top.get_child("0:Id")).read_value() == ua.NodeId(5029, ns.mv)
        # Reset: Halted -> Preoperational (211); SelectModeAutomatic: into Operational's automatic mode
        # at Initialized (PreoperationalToInitialized, 151), then Ready by itself (see test_opcua_letter)
        assert await sm.call_method(f"{ns.mv}:Reset", *CAUSE) == 0
        await ev["StateChangedEventType"].wait_for(changed("HaltedToPreoperational"))
        assert await (await top.get_child("0:Number")).read_value() == 1
        assert await sm.call_method(f"{ns.mv}:SelectModeAutomatic") == 0
        await ev["StateChangedEventType"].wait_for(changed("PreoperationalToInitialized"))
        await ev["StateChangedEventType"].wait_for(changed("InitializedToReadyAuto"))
        await wait_value(auto_state, ua.LocalizedText("Ready"))

        # a camera lost and regained: ErrorEvent, then ErrorResolvedEvent
        line.state = "degraded"
        error = await ev["ErrorEventType"].wait_for(lambda e: e.SourceName == "line1")
        assert error.ToState == ua.LocalizedText("Error") and error.Severity >= 500
        line.state = "running"
        await ev["ErrorResolvedEventType"].wait_for(lambda e: e.SourceName == "line1")
        await wait_value(top, ua.LocalizedText("Operational"))

        # a job: JobStarted (Ready -> SingleExecution), AcquisitionDone, Ready again
        job, code = await auto.call_method(
            f"{ns.mv}:StartSingleJob",
            ua.MeasIdDataType(Id="M-S"),
            ua.PartIdDataType(Id="STATES-1"),
            ua.RecipeIdExternalDataType(Id=""),
            ua.ProductIdDataType(Id=""),
            empty_args(),
        )
        assert code == 0
        started = await ev["JobStartedEventType"].wait_for(lambda e: e.JobId.Id == job.Id)
        assert started.SourceName == "line1"
        acquired = await ev["AcquisitionDoneEventType"].wait_for(lambda e: e.JobId.Id == job.Id)
        stored = demo_server.journal.query(line="line1", part_id="STATES-1")[0]
        assert acquired.Time <= stored.timestamp
        await ev["ReadyEventType"].wait_for(lambda e: e.JobId.Id == job.Id)
        await ev["StateChangedEventType"].wait_for(changed("SingleExecutionToReadyAuto"))
        auto_last = await auto.get_child("0:LastTransition")
        await wait_value(await auto_last.get_child("0:Number"), 760)


async def test_latest_result_children_follow_the_value(demo_server):
    stored = demo_server.journal.append(make_result("plc1", part_id="KIDS-1X", meas_id="M-K", job_id="job-k"))
    async with Client(demo_server.url, timeout=30) as client:
        await client.load_data_type_definitions()
        ns = await namespaces(client)
        latest = await vision_node(client, "plc1", "mv:ResultManagement", "mv:Results", "app:LatestResult")
        demo_server.server.submit_result(stored)
        for _ in range(200):
            value = await latest.read_value()
            if value.ResultId.Id == stored.result_id:
                break
            await asyncio.sleep(0.05)
        children = {(await c.read_browse_name()).Name: c for c in await latest.get_children()}
        assert len(children) == 16
        for name, node in children.items():
            child = await node.read_value()
            whole = getattr(value, name)
            if name == "ResultContent":  # AreaMm2 is NaN: compare the body it carries
                assert [v.Value.BodyJson for v in child] == [v.Value.BodyJson for v in whole]
            else:
                assert child == whole, name
        assert (await children["PartId"].read_value()).Id == "KIDS-1X"
        assert (await children["MeasId"].read_value()).Id == "M-K"
        assert await children["ResultState"].read_value() == 1
        # the children are the server's: a client cannot write them
        forged = ua.DataValue(ua.Variant(ua.PartIdDataType(Id="forged"), ua.VariantType.ExtensionObject))
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await children["PartId"].write_value(forged)
        assert refused.value.code in (ua.StatusCodes.BadNotWritable, ua.StatusCodes.BadUserAccessDenied)
        assert ns.app > 0


SHUTDOWN_SCRIPT = textwrap.dedent(
    """
    import gc, logging, sys, warnings
    from edge_agent.journal import ResultJournal
    from edge_agent.publishers.opcua_publisher import JournalResultStore
    from opcua.config import OpcUaServerConfig
    from opcua.thread import ServerThread
    from tests.opcua.lines import JournalLine

    logging.basicConfig(level=logging.ERROR)  # asyncio's "Task was destroyed" is logged at ERROR
    journal = ResultJournal(sys.argv[1])
    lines = {"line1": JournalLine("line1", journal)}
    server = ServerThread(OpcUaServerConfig(security="none", endpoint="opc.tcp://127.0.0.1:0/x/"),
                          lines, JournalResultStore(journal))
    server.start()
    print(server.endpoint_url, flush=True)
    sys.stdin.readline()  # the client is connected and subscribed
    server.stop()
    lines["line1"].close()
    gc.collect()
    print("stopped", flush=True)
    """
)


async def test_shutdown_with_a_client_connected_leaves_no_pending_task(tmp_path):
    """Issue 13 item 9: stopping the server with a session open must not destroy pending tasks."""
    proc = subprocess.Popen(
        [sys.executable, "-X", "dev", "-c", SHUTDOWN_SCRIPT, str(tmp_path / "j.sqlite")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = await asyncio.to_thread(proc.stdout.readline)
        client = Client(url.strip(), timeout=30)
        await client.connect()
        mv = await client.get_namespace_index(MACHINE_VISION_NS)
        app = await client.get_namespace_index(APP_NS)
        latest = await client.nodes.objects.get_child(
            [f"{app}:line1", f"{mv}:ResultManagement", f"{mv}:Results", f"{app}:LatestResult"]
        )

        class Quiet:
            def datachange_notification(self, node, value, data) -> None: ...

        sub = await client.create_subscription(50, Quiet())
        await sub.subscribe_data_change(latest)
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        out, err = await asyncio.to_thread(proc.communicate, timeout=60)
        with contextlib.suppress(Exception):  # the server is gone: expected
            await client.disconnect()
    finally:
        proc.kill()
    assert "stopped" in out, err
    assert proc.returncode == 0, err
    assert "Task was destroyed but it is pending" not in err
    assert "was never awaited" not in err
