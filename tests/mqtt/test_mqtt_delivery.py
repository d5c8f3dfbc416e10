"""Plain topics and delivery guarantees against a real mosquitto: the JSON body is the result contract,
status is retained, and a broker that goes away and comes back gets every result once, in order, with
its original timestamp (Sparkplug: the backlog flagged historical, a new birth with the next bdSeq)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from mqtt_support import SITE, Recorder, check_seq_continuity, make_result, sparkplug_messages, wait_for

from contract.result import InspectionResult
from edge_agent.journal import ResultJournal
from edge_agent.publishers.base import PublisherContext
from edge_agent.publishers.mqtt_pub import MqttPublisher, MqttPublisherConfig

REPO = Path(__file__).resolve().parents[2]
RESULT_TOPIC = f"edge-inspect/{SITE}/press/result"


def _config(port: int, **extra) -> MqttPublisherConfig:
    return MqttPublisherConfig(port=port, reconnect_initial_s=0.1, reconnect_max_s=0.5, **extra)


def _append(
    journal: ResultJournal, publisher: MqttPublisher, first: int, count: int
) -> list[InspectionResult]:
    out = []
    for n in range(first, first + count):
        out.append(journal.append(make_result(n)))
        publisher.notify(out[-1])
        time.sleep(0.002)
    return out


def test_plain_result_body_and_retained_status(broker, journal: ResultJournal, context: PublisherContext):
    recorder = Recorder(broker.port, [f"edge-inspect/{SITE}/#"], client_id="plain-recorder").start()
    publisher = MqttPublisher(_config(broker.port, sparkplug={"enabled": False}), context)
    publisher.start(journal)
    try:
        publisher.publish_status("press", {"state": "running", "recipe": "default", "fps": 4.0})
        sent = _append(journal, publisher, 1, 20)
        wait_for(lambda: len(recorder.snapshot(RESULT_TOPIC)) == 20, 10, "20 results")
        schema = json.loads((REPO / "schemas" / "result.schema.json").read_text())
        for msg, result in zip(recorder.snapshot(RESULT_TOPIC), sent, strict=True):
            body = json.loads(msg.payload)
            assert set(schema["required"]) <= set(body) <= set(schema["properties"])
            assert InspectionResult.model_validate(body) == result  # the contract, byte for byte in meaning
            assert not msg.retain

        # A subscriber arriving later gets the retained state of the agent and of the line at once.
        late = Recorder(
            broker.port,
            [f"edge-inspect/{SITE}/status", f"edge-inspect/{SITE}/press/status"],
            client_id="late",
        ).start()
        wait_for(lambda: len(late.snapshot()) == 2, 5, "retained status")
        by_topic = {m.topic: (json.loads(m.payload), m.retain) for m in late.snapshot()}
        assert by_topic[f"edge-inspect/{SITE}/status"][0]["online"] is True
        assert by_topic[f"edge-inspect/{SITE}/press/status"] == (
            {"state": "running", "recipe": "default", "fps": 4.0},
            True,
        )
        late.stop()
    finally:
        publisher.stop()
    # A clean stop says offline itself (the broker drops the will on a clean DISCONNECT).
    wait_for(
        lambda: any(
            json.loads(m.payload)["online"] is False for m in recorder.snapshot(f"edge-inspect/{SITE}/status")
        ),
        5,
        "offline status",
    )
    recorder.stop()
    assert journal.cursor("mqtt/plain") == sent[-1].seq


def test_broker_outage_loses_and_duplicates_nothing(
    broker, journal: ResultJournal, context: PublisherContext
):
    recorder = Recorder(broker.port, [f"edge-inspect/{SITE}/+/result", "spBv1.0/#"]).start()
    publisher = MqttPublisher(_config(broker.port), context)
    publisher.start(journal)
    try:  # connected first, so the first results are live, not backlog
        wait_for(
            lambda: publisher.stats()["plain_connected"] and publisher.stats()["sparkplug_connected"],
            10,
            "both sessions connected",
        )
        before = _append(journal, publisher, 1, 40)
        wait_for(
            lambda: publisher.stats()["plain_cursor"] == publisher.stats()["sparkplug_cursor"] == 40,
            10,
            "the first 40 acknowledged",
        )
        # ... and received: a message the broker has not yet delivered to the recorder (or has no PUBACK
        # for) when it stops is delivered again after the restart (MQTT's at-least-once to a persistent
        # subscriber), which would read as the publisher's duplicate.
        wait_for(
            lambda: (
                len(recorder.snapshot(RESULT_TOPIC)) == 40
                and sum(k == "DDATA" for k, *_ in sparkplug_messages(recorder, "edge-inspect")) == 40
            ),
            10,
            "the recorder's copies of the first 40",
        )
        time.sleep(0.2)  # its PUBACKs reach the broker
        broker.stop()
        during = _append(journal, publisher, 41, 120)
        time.sleep(1.5)
        stats = publisher.stats()
        assert stats["plain_cursor"] == stats["sparkplug_cursor"] == 40, "no PUBACK, no progress"
        assert stats["plain_backlog"] == stats["sparkplug_backlog"] == 120
        assert journal.cursor("mqtt") == 40
        broker.start()
        wait_for(
            lambda: publisher.stats()["plain_births"] == publisher.stats()["sparkplug_births"] == 2,
            10,
            "both sessions back",
        )  # results from now on are live again
        after = _append(journal, publisher, 161, 40)
        wait_for(
            lambda: publisher.stats()["plain_cursor"] == publisher.stats()["sparkplug_cursor"] == 200,
            20,
            "everything acknowledged after the outage",
        )
        wait_for(lambda: len(recorder.snapshot(RESULT_TOPIC)) >= 200, 10, "the recorder's backlog")
        time.sleep(0.3)  # anything duplicated would arrive now
    finally:
        publisher.stop()
        recorder.stop()
    everything = before + during + after

    plain = [json.loads(m.payload) for m in recorder.snapshot(RESULT_TOPIC)]
    assert [b["result_id"] for b in plain] == [r.result_id for r in everything]  # all, once, in order
    assert [InspectionResult.model_validate(b).timestamp for b in plain] == [r.timestamp for r in everything]

    messages = sparkplug_messages(recorder, "edge-inspect")
    check_seq_continuity(messages)
    births = [p.by_name()["bdSeq"].value for k, _d, p, _r in messages if k == "NBIRTH"]
    assert births == [0, 1], "a new session after the restart, with the next bdSeq"
    data = [p.by_name() for k, _d, p, _r in messages if k == "DDATA" and "Result/Result ID" in p.by_name()]
    assert [d["Result/Result ID"].value for d in data] == [r.result_id for r in everything]
    historical = [d["Result/Result ID"].is_historical for d in data]
    assert historical == [False] * 40 + [True] * 120 + [False] * 40, "the backlog is history, not live"
    assert [d["Result/Verdict"].timestamp for d in data] == [
        round(r.timestamp.timestamp() * 1000) for r in everything
    ]
    assert journal.cursor("mqtt") == 200
