"""The PLC tag handshake over TCP.

Trigger rising edge -> Busy -> result -> ResultReady held until ResultAck.
"""

from __future__ import annotations

from asyncua import Client, ua

from tests.opcua.opcua_helpers import vision_node, wait_value


async def _write(node, value: bool) -> None:
    await node.write_value(ua.DataValue(ua.Variant(value, ua.VariantType.Boolean)))


async def test_plc_handshake_and_trigger_while_busy(demo_server):
    line = demo_server.lines["plc1"]
    async with Client(demo_server.url, timeout=30) as client:
        tags = {
            name: await vision_node(client, "plc1", "app:PLC", f"app:{name}")
            for name in (
                "Ready",
                "Trigger",
                "Busy",
                "ResultReady",
                "ResultAck",
                "Verdict",
                "DefectCount",
                "PartId",
                "ResultSeq",
                "ModelVersion",
                "InferenceMs",
                "TriggersRefused",
            )
        }
        await wait_value(tags["Ready"], True)
        assert await tags["ModelVersion"].read_value() == "7"
        refused_before = await tags["TriggersRefused"].read_value()

        line.release.clear()  # hold the inspection so the line stays busy
        await _write(tags["Trigger"], True)
        await wait_value(tags["Busy"], True)
        assert await tags["Ready"].read_value() is False
        await _write(tags["Trigger"], False)

        await _write(tags["Trigger"], True)  # a second rising edge while busy: refused and counted
        await wait_value(tags["TriggersRefused"], refused_before + 1)
        await _write(tags["Trigger"], False)
        assert len([t for t in line.triggers if t["job_id"] and t["job_id"].startswith("plc-")]) == 1

        line.release.set()
        await wait_value(tags["ResultReady"], True)
        assert await tags["Busy"].read_value() is False
        stored = demo_server.journal.get(await tags["ResultSeq"].read_value())
        assert stored is not None and stored.line == "plc1"
        assert await tags["PartId"].read_value() == stored.part_id
        assert await tags["Verdict"].read_value() == stored.verdict
        assert await tags["DefectCount"].read_value() == len(stored.defects)
        assert await tags["InferenceMs"].read_value() == stored.timings_ms["inference"]

        # ResultReady is held: another trigger before the acknowledgement is refused too
        await _write(tags["Trigger"], True)
        await wait_value(tags["TriggersRefused"], refused_before + 2)
        await _write(tags["Trigger"], False)
        assert await tags["ResultReady"].read_value() is True

        await _write(tags["ResultAck"], True)
        await wait_value(tags["ResultReady"], False)
        await wait_value(tags["Ready"], True)
        await _write(tags["ResultAck"], False)

        # and the next cycle works
        await _write(tags["Trigger"], True)
        await wait_value(tags["ResultReady"], True)
        assert await tags["ResultSeq"].read_value() > stored.seq
        await _write(tags["Trigger"], False)
        await _write(tags["ResultAck"], True)
        await wait_value(tags["Ready"], True)
        await _write(tags["ResultAck"], False)


async def test_plc_tags_read_only_where_they_should_be(demo_server):
    async with Client(demo_server.url, timeout=30) as client:
        busy = await vision_node(client, "plc1", "app:PLC", "app:Busy")
        try:
            await _write(busy, True)
        except ua.UaStatusCodeError as exc:
            assert exc.code in (ua.StatusCodes.BadNotWritable, ua.StatusCodes.BadUserAccessDenied)
        else:
            raise AssertionError("Busy must not be writable by clients")
