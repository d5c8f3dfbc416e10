"""Sparkplug B against a real mosquitto, read back with the tests' own protobuf decoder: births carry every
metric with its datatype, one DDATA per result, seq continuity and its wrap at 255, rebirth on NCMD, a
device rebirth for a new defect class, and the line state."""

from __future__ import annotations

from types import SimpleNamespace

import paho.mqtt.client as mqtt
from mqtt_support import (
    SITE,
    Recorder,
    check_seq_continuity,
    encode_rebirth_command,
    make_result,
    sparkplug_messages,
    wait_for,
)

from edge_agent.journal import ResultJournal
from edge_agent.publishers.base import PublisherContext
from edge_agent.publishers.mqtt_pub import MqttPublisher, MqttPublisherConfig

GROUP = "plant-group"

LINE_METRICS = {
    "Result/Verdict": "String",
    "Result/Part ID": "String",
    "Result/Result ID": "String",
    "Result/Journal Seq": "UInt64",
    "Result/Defect Count": "UInt32",
    "Result/Top Confidence": "Float",
    "Result/Reasons": "String",
    "Result/Defects/scratch": "UInt32",
    "Result/Defects/dent": "UInt32",
    "Model/Name": "String",
    "Model/Version": "String",
    "Recipe": "String",
    "Rates/Parts per Minute": "Double",
    "Rates/NG Ratio": "Double",
}
NODE_METRICS = {
    "bdSeq": "Int64",
    "Node Control/Rebirth": "Boolean",
    "Properties/Software": "String",
    "Properties/Version": "String",
    "Delivery/Backlog": "UInt64",
}


def test_births_data_seq_wrap_rebirth_and_new_class(
    broker, journal: ResultJournal, context: PublisherContext
):
    context.lines = {"press": SimpleNamespace(class_names=["scratch", "dent"])}
    recorder = Recorder(broker.port, [f"spBv1.0/{GROUP}/#"]).start()
    config = MqttPublisherConfig(port=broker.port, plain=False, sparkplug={"group_id": GROUP})
    publisher = MqttPublisher(config, context)
    publisher.start(journal)
    try:
        wait_for(lambda: len(sparkplug_messages(recorder, GROUP)) >= 2, 10, "NBIRTH and DBIRTH")
        kinds = [(k, d) for k, d, _p, _r in sparkplug_messages(recorder, GROUP)]
        assert kinds[:2] == [("NBIRTH", None), ("DBIRTH", "press")]
        nbirth = sparkplug_messages(recorder, GROUP)[0][2].by_name()
        assert {n: m.datatype for n, m in nbirth.items()} == NODE_METRICS
        assert nbirth["bdSeq"].value == 0 and nbirth["Node Control/Rebirth"].value is False
        dbirth = sparkplug_messages(recorder, GROUP)[1][2].by_name()
        assert {n: m.datatype for n, m in dbirth.items()} == {**LINE_METRICS, "Line/State": "String"}
        assert all(m.is_null for n, m in dbirth.items()), "no result yet: every value null, datatype given"

        publisher.publish_status("press", {"state": "running", "recipe": "default"})
        appended = []
        for n in range(1, 301):  # > 256 messages: seq wraps
            appended.append(journal.append(make_result(n)))
            publisher.notify(appended[-1])
        wait_for(
            lambda: sum(k == "DDATA" for k, *_ in sparkplug_messages(recorder, GROUP)) >= 301,
            20,
            "a DDATA per result and one for the state",
        )
        messages = sparkplug_messages(recorder, GROUP)
        assert check_seq_continuity(messages) >= 1, "seq wraps 255 -> 0"
        data = [p.by_name() for k, _d, p, _r in messages if k == "DDATA"]
        assert data[0]["Line/State"].value == "running"
        per_result = [d for d in data if "Result/Result ID" in d]
        assert [d["Result/Result ID"].value for d in per_result] == [r.result_id for r in appended]
        for d, r in zip(per_result, appended, strict=True):
            assert {n: m.datatype for n, m in d.items()} == LINE_METRICS  # every metric, every time
            assert d["Result/Verdict"].value == r.verdict
            assert d["Result/Journal Seq"].value == r.seq
            assert d["Result/Defect Count"].value == len(r.defects)
            assert d["Result/Defects/scratch"].value == len(r.defects)
            assert d["Result/Defects/dent"].value == 0
            assert abs(d["Result/Top Confidence"].value - (0.5 if r.defects else 0.0)) < 1e-6
            assert d["Model/Version"].value == "7" and d["Recipe"].value == "default"
            assert d["Result/Verdict"].timestamp == round(r.timestamp.timestamp() * 1000)
            assert not d["Result/Verdict"].is_historical
        assert 0 < per_result[-1]["Rates/NG Ratio"].value < 0.5
        assert per_result[-1]["Rates/Parts per Minute"].value == 300.0  # all within the last minute

        # A host asks for a rebirth: NBIRTH (seq 0, same bdSeq) and DBIRTH valued from the last result.
        before = len(sparkplug_messages(recorder, GROUP))
        host = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="host")
        host.connect("127.0.0.1", broker.port)
        host.loop_start()
        host.publish(f"spBv1.0/{GROUP}/NCMD/{SITE}", encode_rebirth_command(), qos=0).wait_for_publish(5)
        wait_for(lambda: len(sparkplug_messages(recorder, GROUP)) >= before + 3, 10, "the rebirth")
        host.loop_stop()
        host.disconnect()
        reborn = [m for m in sparkplug_messages(recorder, GROUP)[before:] if m[0] != "NCMD"]
        assert [(k, p.seq) for k, _d, p, _r in reborn[:2]] == [("NBIRTH", 0), ("DBIRTH", 1)]
        assert reborn[0][2].by_name()["bdSeq"].value == 0
        rebirth_values = reborn[1][2].by_name()
        assert rebirth_values["Result/Result ID"].value == appended[-1].result_id
        assert rebirth_values["Line/State"].value == "running"

        # A class the model never named: the device is born again with the new metric, then its data.
        crack = journal.append(make_result(303, classes=("scratch", "crack")))
        publisher.notify(crack)
        wait_for(
            lambda: any(
                p.by_name().get("Result/Result ID", None)
                and p.by_name()["Result/Result ID"].value == crack.result_id
                and k == "DDATA"
                for k, _d, p, _r in sparkplug_messages(recorder, GROUP)
            ),
            10,
            "the crack result",
        )
        tail = sparkplug_messages(recorder, GROUP)[-2:]
        assert [k for k, *_ in tail] == ["DBIRTH", "DDATA"]
        assert tail[0][2].by_name()["Result/Defects/crack"].datatype == "UInt32"
        assert tail[1][2].by_name()["Result/Defects/crack"].value == 1
        check_seq_continuity(sparkplug_messages(recorder, GROUP))
    finally:
        publisher.stop()
        recorder.stop()
    assert journal.cursor("mqtt/sparkplug") == crack.seq
    assert journal.cursor("mqtt") == crack.seq


def test_qos0_cursor_moves_once_written(broker, journal: ResultJournal, context: PublisherContext):
    """`sparkplug.qos: 0` (the specification's QoS): without PUBACKs the cursor still reaches the last
    result (it moves as paho writes each message), and every result arrives as a DDATA, in order."""
    recorder = Recorder(broker.port, [f"spBv1.0/{GROUP}/#"], client_id="qos0-recorder").start()
    config = MqttPublisherConfig(port=broker.port, plain=False, sparkplug={"group_id": GROUP, "qos": 0})
    publisher = MqttPublisher(config, context)
    publisher.start(journal)
    try:
        wait_for(lambda: publisher.stats()["sparkplug_connected"], 10, "connected")
        appended = [journal.append(make_result(n)) for n in range(1, 61)]
        for result in appended:
            publisher.notify(result)
        wait_for(lambda: publisher.stats()["sparkplug_cursor"] == 60, 10, "the cursor at the last result")
        wait_for(
            lambda: sum(k == "DDATA" for k, *_ in sparkplug_messages(recorder, GROUP)) >= 60, 10, "60 DDATA"
        )
        messages = sparkplug_messages(recorder, GROUP)
        check_seq_continuity(messages)
        ids = [p.by_name()["Result/Result ID"].value for k, _d, p, _r in messages if k == "DDATA"]
        assert ids == [r.result_id for r in appended]
    finally:
        publisher.stop()
        recorder.stop()
    assert journal.cursor("mqtt/sparkplug") == 60
