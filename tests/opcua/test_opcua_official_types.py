"""A client that knows only the official NodeSet decodes what the server sends.

The client runs in a fresh process, never calls `load_data_type_definitions()` (so it never sees the
server's DataTypeDefinitions) and decodes LatestResult, a ResultReadyEvent and GetResultById's
output with `tests/opcua/official.py`: structures found by their official "Default Binary"
encoding ids, fields laid out as the NodeSet defines them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.opcua import official
from tests.opcua.lines import make_result
from tests.opcua.opcua_helpers import APP_NS

pytestmark = pytest.mark.skipif(not official.NODESET.exists(), reason=official.SKIP_REASON)

CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys
    from asyncua import Client, ua
    from tests.opcua import official

    MV_URI = "http://opcfoundation.org/UA/MachineVision"

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if k != "__body__"}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if hasattr(value, "isoformat"):
            return value.isoformat()
        if isinstance(value, bytes):
            return value.hex()
        return value

    async def main(url, app_uri):
        model = official.load()
        async with Client(url) as client:
            assert not hasattr(ua, "ResultDataType")  # nothing learnt from the server
            mv = await client.get_namespace_index(MV_URI)
            app = await client.get_namespace_index(app_uri)
            codec = official.OfficialCodec(model, mv)

            def decode(raw):
                assert isinstance(raw, ua.ExtensionObject), type(raw)
                assert raw.TypeId.NamespaceIndex == mv, raw.TypeId
                return codec.decode_extension_object(raw.TypeId.Identifier, raw.Body)

            events = []
            got = asyncio.Event()

            class Handler:
                def event_notification(self, event):
                    events.append(event)
                    got.set()

            etype = client.get_node(ua.NodeId(model.by_name("ResultReadyEventType", "ObjectType").number, mv))
            sub = await client.create_subscription(10, Handler())
            await sub.subscribe_events(client.nodes.server, etype)
            print("ready", flush=True)
            part = sys.stdin.readline().strip()
            await asyncio.wait_for(got.wait(), 30)
            event = next(e for e in events if decode(e.PartId)["Id"] == part)
            from_event = {
                name: plain(decode(getattr(event, name)))
                for name in ("ResultId", "MeasId", "PartId", "JobId", "InternalRecipeId",
                             "ExternalRecipeId", "ProductId", "InternalConfigurationId",
                             "ExternalConfigurationId", "ProcessingTimes")
            }
            from_event["ResultState"] = event.ResultState
            from_event["IsPartial"] = event.IsPartial

            latest = await client.nodes.objects.get_child(
                [f"{app}:line1", f"{mv}:ResultManagement", f"{mv}:Results", f"{app}:LatestResult"]
            )
            for _ in range(100):
                latest_value = decode(await latest.read_value())
                if latest_value["PartId"]["Id"] == part:
                    break
                await asyncio.sleep(0.05)

            results = await client.nodes.objects.get_child([f"{app}:line1", f"{mv}:ResultManagement"])
            number, body = codec.encode_id("ResultIdDataType", from_event["ResultId"]["Id"])
            arg = ua.ExtensionObject(TypeId=ua.NodeId(number, mv), Body=body)
            handle, by_id, error = await results.call_method(
                f"{mv}:GetResultById", ua.Variant(arg, ua.VariantType.ExtensionObject),
                ua.Variant(0, ua.VariantType.Int32),
            )
            print(json.dumps({"event": from_event, "latest": plain(latest_value),
                              "by_id": plain(decode(by_id)), "error": error, "handle": handle}), flush=True)
            await sub.delete()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_official_client_decodes_latest_result_event_and_get_result_by_id(demo_server):
    proc = subprocess.Popen(
        [sys.executable, "-c", CLIENT, demo_server.url, APP_NS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=official.REPO,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline().strip()
        assert line == "ready", proc.stderr.read() if proc.stderr else line
        stored = demo_server.journal.append(
            make_result("line1", part_id="OFFICIAL-1X", meas_id="M-77", product_id="PRD-9", job_id="job-77")
        )
        demo_server.server.submit_result(stored)
        proc.stdin.write("OFFICIAL-1X\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    decoded = json.loads(out.strip().splitlines()[-1])
    event, latest, by_id = decoded["event"], decoded["latest"], decoded["by_id"]
    assert decoded["error"] == 0 and decoded["handle"] > 0

    assert event["ResultId"]["Id"] == stored.result_id
    assert event["PartId"]["Id"] == "OFFICIAL-1X" and event["MeasId"]["Id"] == "M-77"
    assert event["JobId"]["Id"] == "job-77" and event["ProductId"]["Id"] == "PRD-9"
    assert event["InternalRecipeId"]["__type__"] == "RecipeIdInternalDataType"
    assert event["ExternalRecipeId"]["__type__"] == "RecipeIdExternalDataType"
    assert event["InternalRecipeId"]["Id"] == "default"
    assert event["InternalConfigurationId"]["__type__"] == "ConfigurationIdDataType"
    assert event["InternalConfigurationId"]["Id"] == "line1:tiny"
    assert event["InternalConfigurationId"]["Version"] == "7"
    assert event["ExternalConfigurationId"]["Id"] == "tiny"
    assert event["ProcessingTimes"]["ProcessingDuration"] == 7.0
    assert event["ProcessingTimes"]["AcquisitionDuration"] == 1.5
    assert (event["ResultState"], event["IsPartial"]) == (1, False)

    for value in (latest, by_id):
        assert value["__type__"] == "ResultDataType"
        assert value["ResultId"]["Id"] == stored.result_id and value["ResultState"] == 1
        assert value["PartId"] == {"Id": "OFFICIAL-1X", "Description": None}
        assert value["JobId"]["Id"] == "job-77" and value["MeasId"]["Id"] == "M-77"
        assert value["InternalConfigurationId"]["Id"] == "line1:tiny"
        assert value["CreationTime"].startswith(stored.timestamp.strftime("%Y-%m-%dT%H:%M:%S"))
        # ResultContent: one vendor structure (application namespace), passed through undecoded
        (content,) = value["ResultContent"]
        assert content["__typeid__"][0] != 0
