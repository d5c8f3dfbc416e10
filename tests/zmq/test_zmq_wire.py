"""The wire format: topic, hand-written JSON header, JSON/msgpack body, and clear errors."""

from __future__ import annotations

import json

import pytest
from zmq_support import SITE, make_result

from contract.result import InspectionResult
from contract.zmq_wire import WIRE_SCHEMA_VERSION, WireError, decode, encode_event, encode_result, topic


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_result_round_trip_with_awkward_strings(encoding: str) -> None:
    result = make_result("line-1", 7, "NG").model_copy(
        update={"seq": 42, "part_id": 'P "7"\\ ünïcode\n\ttab \u2028 end'})
    frames = encode_result(result, boot_id="boot-1", prev_seq=40, is_historical=True, encoding=encoding)
    assert frames[0] == f"insp.v1/{SITE}/line-1/result".encode()
    header = json.loads(frames[1])  # any JSON parser reads the header
    assert header == {
        "schema_version": WIRE_SCHEMA_VERSION, "kind": "result", "encoding": encoding, "site": SITE,
        "line": "line-1", "seq": 42, "prev_seq": 40, "boot_id": "boot-1", "result_id": result.result_id,
        "part_id": result.part_id, "timestamp": result.timestamp.isoformat(), "is_historical": True,
    }
    message = decode(frames)
    assert message.result() == result
    if encoding == "json":  # the body is the schema's JSON, byte for byte what the journal stores
        assert InspectionResult.from_json(frames[2]) == result


def test_status_and_heartbeat_bodies() -> None:
    frames = encode_event("status", {"state": "degraded", "cameras": [{"name": "top"}]}, site=SITE,
                          line="line-1", boot_id="b", seq=9)
    message = decode(frames)
    assert message.topic.endswith("/line-1/status") and message.seq == 9
    assert message.header["prev_seq"] is None and message.header["result_id"] is None
    assert message.payload() == {"state": "degraded", "cameras": [{"name": "top"}]}
    with pytest.raises(WireError, match="not a result"):
        message.result()


def test_only_journaled_results_go_on_the_wire() -> None:
    with pytest.raises(WireError, match="no seq"):
        encode_result(make_result(), boot_id="b")


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        ([b"insp.v1/s/l/result", b"{}"], "expected 3 frames"),
        ([b"t", b"not json", b"{}"], "header frame is not JSON"),
        ([b"t", b"[1, 2]", b"{}"], "JSON object with a 'kind'"),
        ([b"t", b'{"kind": "result", "schema_version": "99"}', b"{}"], "'99' is not supported"),
    ],
)
def test_malformed_messages_are_named(frames: list[bytes], expected: str) -> None:
    with pytest.raises(WireError, match=expected):
        decode(frames)


def test_unknown_encoding_and_bad_topic_parts() -> None:
    header = json.dumps({"kind": "status", "schema_version": WIRE_SCHEMA_VERSION, "encoding": "xml"})
    with pytest.raises(WireError, match="unknown body encoding 'xml'"):
        decode([b"t", header.encode(), b"<a/>"]).payload()
    with pytest.raises(WireError, match="line 'a/b'"):
        topic("site", "a/b", "result")
