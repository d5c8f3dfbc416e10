"""The `opcua` publisher inside a real agent: a real LineRuntime (folder camera, tiny ONNX model)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from asyncua import Client, ua

from edge_agent.agent import Agent
from edge_agent.config import load_agent_config
from edge_agent.publishers.opcua_publisher import OpcUaPublisher
from tests.agent.agent_helpers import folder_line, write_site
from tests.opcua.opcua_helpers import empty_args, namespaces, vision_node, wait_value


async def test_agent_line_driven_over_opcua(tmp_path, tiny_detect_onnx, synthetic_images):
    line = folder_line(
        "cell1",
        synthetic_images,
        tiny_detect_onnx,
        trigger={"type": "triggered"},
        cameras=[
            {"name": "top", "source": {"type": "folder", "path": str(synthetic_images), "mode": "loop"}}
        ],
        recipes={"default": {"min_confidence": 0.01}, "strict": {"min_confidence": 0.5}},
    )
    site = write_site(
        tmp_path,
        [line],
        publishers=[{"type": "opcua", "security": "none", "endpoint": "opc.tcp://127.0.0.1:0/edge-inspect/"}],
        archive={"path": "data/archive", "ok_sample_rate": 1.0},  # every part's image is kept
    )
    agent = Agent(load_agent_config(site))
    await asyncio.to_thread(agent.start)
    try:
        publisher = next(p for p in agent.publishers if isinstance(p, OpcUaPublisher))
        await asyncio.to_thread(publisher.server.wait_started, 60)  # the agent did not wait for it
        async with Client(publisher.server.endpoint_url) as client:
            await client.load_data_type_definitions()
            ns = await namespaces(client)
            auto = await vision_node(client, "cell1", "mv:VisionStateMachine", "mv:AutomaticModeStateMachine")
            await wait_value(await auto.get_child("0:CurrentState"), ua.LocalizedText("Ready"), timeout=30)

            events: list = []
            got = asyncio.Event()

            class Handler:
                def event_notification(self, event):
                    events.append(event)
                    got.set()

            etype = await client.nodes.base_event_type.get_child(f"{ns.mv}:ResultReadyEventType")
            sub = await client.create_subscription(10, Handler())
            await sub.subscribe_events(client.nodes.server, etype)

            job, error = await auto.call_method(
                f"{ns.mv}:StartSingleJob",
                ua.MeasIdDataType(Id="M-42"),
                ua.PartIdDataType(Id="AGENT-1"),
                ua.RecipeIdExternalDataType(Id="strict"),
                ua.ProductIdDataType(Id="PRD"),
                empty_args(),
            )
            assert error == 0
            await asyncio.wait_for(got.wait(), 30)
            event = events[-1]
            assert event.JobId.Id == job.Id and event.PartId.Id == "AGENT-1"

            stored = agent.journal.get_by_id(event.ResultId.Id)
            assert stored is not None
            assert (stored.part_id, stored.job_id, stored.meas_id, stored.recipe) == (
                "AGENT-1",
                job.Id,
                "M-42",
                "strict",
            )
            content = event.ResultContent[0].Value
            assert content.Verdict == stored.verdict and content.DefectCount == sum(
                d.counts_for_verdict for d in stored.defects
            )

            results = await vision_node(client, "cell1", "mv:ResultManagement")
            _, by_id, error = await results.call_method(
                f"{ns.mv}:GetResultById",
                ua.ResultIdDataType(Id=stored.result_id),
                ua.Variant(0, ua.VariantType.Int32),
            )
            assert error == 0 and by_id.JobId.Id == job.Id

            # the components: per camera its defects and the image the NG archive kept
            for _ in range(300):
                out = await results.call_method(
                    f"{ns.mv}:GetResultComponentsById",
                    ua.ResultIdDataType(Id=stored.result_id),
                    ua.Variant(0, ua.VariantType.Int32),
                )
                camera = out[15][1].Value
                if camera.Image:
                    break
                await asyncio.sleep(0.05)
            assert out[-1] == 0 and camera.Camera == "top"
            assert camera.Image[:2] == b"\xff\xd8" and Path(camera.ImageFile).read_bytes() == camera.Image
            assert len(camera.Defects) == sum(d.camera == "top" for d in stored.defects)

            recipes = await vision_node(client, "cell1", "mv:RecipeManagement")
            _, _, error = await recipes.call_method(
                f"{ns.mv}:PrepareRecipe",
                ua.RecipeIdExternalDataType(Id="strict"),
                ua.RecipeIdInternalDataType(Id=""),
            )
            assert error == 0 and agent.lines["cell1"].active_recipe == "strict"

            plc = {
                n: await vision_node(client, "cell1", "app:PLC", f"app:{n}")
                for n in ("Ready", "Trigger", "ResultReady", "ResultSeq", "ResultAck")
            }
            await wait_value(plc["Ready"], True)
            await plc["Trigger"].write_value(ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)))
            await wait_value(plc["ResultReady"], True, timeout=30)
            seq = await plc["ResultSeq"].read_value()
            assert seq > stored.seq and agent.journal.get(seq).line == "cell1"
            await plc["ResultAck"].write_value(ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)))
            await wait_value(plc["ResultReady"], False)

            agent.lines["cell1"].pause()
            await wait_value(await auto.get_child("0:CurrentState"), ua.LocalizedText("Initialized"))
    finally:
        await asyncio.to_thread(agent.stop)


def test_publisher_refuses_to_start_on_a_busy_port_or_without_certificate(tmp_path):
    """The checks the agent's start can make at once (the server itself starts in the background)."""
    import socket

    import pytest

    from contract.passwords import hash_password
    from edge_agent.journal import ResultJournal
    from edge_agent.publishers.base import PublisherContext
    from edge_agent.publishers.opcua_publisher import OpcUaPublisherConfig
    from opcua.config import UserConfig

    journal = ResultJournal(tmp_path / "journal.sqlite")
    context = PublisherContext(site="s", boot_id="b", journal=journal, lines={})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = OpcUaPublisherConfig(security="none", endpoint=f"opc.tcp://127.0.0.1:{port}/x/")
        with pytest.raises(OSError, match=f"cannot listen on opc.tcp://127.0.0.1:{port}/x/"):
            OpcUaPublisher(config, context).start(journal)
    users = [UserConfig(name="mes", role="operator", password_hash=hash_password("x"))]
    config = OpcUaPublisherConfig(endpoint="opc.tcp://127.0.0.1:0/x/", pki_dir=tmp_path / "pki", users=users)
    with pytest.raises(FileNotFoundError, match="edge-inspect opcua cert"):
        OpcUaPublisher(config, context).start(journal)
    journal.close()
