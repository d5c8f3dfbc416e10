"""Live PUB stream + ROUTER snapshot/replay, with real sockets and the StreamClient subscriber library."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import zmq
from zmq_support import SITE, free_port, make_result, wait_for

from contract.zmq_wire import decode
from edge_agent.journal import ResultJournal
from edge_agent.publishers.base import PublisherContext
from edge_agent.publishers.zmq_pub import ZmqPublisher, ZmqPublisherConfig
from mes.client import StreamClient


def _publisher(journal, context, **overrides) -> ZmqPublisher:
    fields = {"pub_endpoint": "tcp://127.0.0.1:*", "router_endpoint": "tcp://127.0.0.1:*",
              "security": "plain", "heartbeat_interval_s": 0.2, **overrides}
    publisher = ZmqPublisher(ZmqPublisherConfig(**fields), context)
    publisher.start(journal)
    return publisher


def _journal_and_notify(journal, publisher, line: str, start: int, count: int) -> list:
    out = []
    for i in range(start, start + count):
        result = journal.append(make_result(line, i, "NG" if i % 4 == 0 else "OK"))
        publisher.notify(result)
        out.append(result)
    return out


def _collect(client: StreamClient, n: int, timeout: float = 20.0) -> list:
    events = []
    deadline = time.monotonic() + timeout
    while len(events) < n and time.monotonic() < deadline:
        event = client.recv(timeout=0.5)
        if event is not None and event.kind == "result":
            events.append(event)
    return events


def test_raw_subscriber_sees_topic_header_and_seq_chain(journal, publisher_context) -> None:
    publisher = _publisher(journal, publisher_context)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.subscribe(f"insp.v1/{SITE}/line-1/result".encode())
    sub.connect(publisher.pub_endpoint)
    try:
        # A slow joiner misses the first messages by design: wait until the subscription is in place.
        wait_for(lambda: publisher.stats()["subscriptions"] >= 1, what="subscription")
        sent = _journal_and_notify(journal, publisher, "line-1", 0, 3)
        journal.append(make_result("line-2", 99))  # another line's seq sits between line-1's
        sent += _journal_and_notify(journal, publisher, "line-1", 3, 1)
        got = []
        for _ in range(4):
            assert sub.poll(10_000)
            got.append(decode(sub.recv_multipart()))
        assert [m.topic for m in got] == [f"insp.v1/{SITE}/line-1/result"] * 4
        assert [m.seq for m in got] == [1, 2, 3, 5]
        assert [m.header["prev_seq"] for m in got] == [None, 1, 2, 3]  # per line, across the other line
        header = got[0].header
        assert header["boot_id"] == publisher_context.boot_id and header["is_historical"] is False
        assert header["result_id"] == sent[0].result_id and header["part_id"] == sent[0].part_id
        assert got[0].result() == sent[0]
    finally:
        sub.close(0)
        ctx.term()
        publisher.stop()


def test_late_joiner_gets_snapshot_then_live_without_gap(journal, publisher_context) -> None:
    publisher = _publisher(journal, publisher_context)
    try:
        before = _journal_and_notify(journal, publisher, "line-1", 0, 30)
        with StreamClient(publisher.pub_endpoint, publisher.router_endpoint, site=SITE) as client:
            snapshot = client.recv(timeout=5)
            assert snapshot is not None and snapshot.is_historical
            assert snapshot.result.result_id == before[-1].result_id  # the line's current state
            wait_for(lambda: publisher.stats()["subscriptions"] >= 1, what="subscription")
            after = _journal_and_notify(journal, publisher, "line-1", 30, 40)
            live = _collect(client, 40)
        assert [e.result.result_id for e in live] == [r.result_id for r in after]
        assert not any(e.is_historical for e in live)
    finally:
        publisher.stop()


def test_resume_since_seq_replays_in_pages_then_follows_live(journal, publisher_context) -> None:
    publisher = _publisher(journal, publisher_context, replay_max_batch=7)  # forces several pages
    try:
        old = _journal_and_notify(journal, publisher, "line-1", 0, 25)
        old += _journal_and_notify(journal, publisher, "line-2", 25, 10)
        with StreamClient(publisher.pub_endpoint, publisher.router_endpoint, since_seq=5) as client:
            replayed = _collect(client, 30)
            assert [e.result.seq for e in replayed] == list(range(6, 36))
            assert all(e.is_historical for e in replayed)
            wait_for(lambda: publisher.stats()["subscriptions"] >= 1, what="subscription")
            new = _journal_and_notify(journal, publisher, "line-2", 35, 5)
            live = _collect(client, 5)
        assert [e.result.seq for e in live] == [r.seq for r in new]
    finally:
        publisher.stop()


def test_slow_subscriber_never_blocks_notify_and_drops_are_counted(journal, publisher_context) -> None:
    """A subscriber that never reads: every notify() returns, the PUB side counts the drops, and a
    StreamClient that later falls behind the same way still ends up with every result via replay."""
    publisher = _publisher(journal, publisher_context, send_hwm=5)
    ctx = zmq.Context()
    stalled = ctx.socket(zmq.SUB)
    stalled.rcvhwm = 5
    stalled.subscribe(b"")
    stalled.connect(publisher.pub_endpoint)
    try:
        wait_for(lambda: publisher.stats()["subscriptions"] >= 1, what="subscription")
        with StreamClient(publisher.pub_endpoint, publisher.router_endpoint, site=SITE, rcvhwm=5) as client:
            wait_for(lambda: publisher.stats()["subscriptions"] >= 2, what="second subscription")
            # The producer is the inference loop's side of the publisher: journal + notify, 3000 times.
            sent = _journal_and_notify(journal, publisher, "line-1", 0, 3000)
            wait_for(lambda: publisher.stats()["backlog"] == 0, what="sender queue to drain")
            stats = publisher.stats()
            assert stats["dropped"] > 0 and stats["dropped_hwm"] > 0
            assert stats["sent"] + stats["dropped"] == 3000  # every result either sent or counted
            assert journal.count() == 3000  # inference-side work all done, nothing waited for the peer
            got = _collect(client, 3000, timeout=60)
        assert [e.result.seq for e in got] == [r.seq for r in sent]  # no gap, no duplicate, in order
        assert client.counters.gaps_filled >= 1
    finally:
        stalled.close(0)
        ctx.term()
        publisher.stop()


def test_full_queue_drops_are_counted_not_blocking(journal, publisher_context) -> None:
    publisher = ZmqPublisher(
        ZmqPublisherConfig(pub_endpoint="tcp://127.0.0.1:*", router_endpoint=None, security="plain",
                           queue_size=10),
        publisher_context,
    )
    # Not started: nothing drains the queue, as when the sender thread is starved of CPU.
    for i in range(25):
        publisher.notify(journal.append(make_result("line-1", i)))
    stats = publisher.stats()
    assert stats["backlog"] == 10 and stats["dropped_queue"] == 15 and stats["dropped"] == 15


def test_results_journaled_while_no_publisher_ran_are_replayed(tmp_path: Path, journal) -> None:
    """Crash between journal commit and publish: after restart the seq chain shows the gap."""
    pub_port, router_port = free_port(), free_port()
    endpoints = {"pub_endpoint": f"tcp://127.0.0.1:{pub_port}", "router_endpoint": f"tcp://127.0.0.1:{router_port}"}
    lines = {"line-1": object()}  # a known line: the publisher starts its chain from the journal
    first = _publisher(journal, PublisherContext(SITE, uuid.uuid4().hex, journal, lines), **endpoints)
    client = StreamClient(endpoints["pub_endpoint"], endpoints["router_endpoint"], site=SITE)
    client.start()
    try:
        wait_for(lambda: first.stats()["subscriptions"] >= 1, what="subscription")
        a = _journal_and_notify(journal, first, "line-1", 0, 5)
        assert [e.result.seq for e in _collect(client, 5)] == [r.seq for r in a]
        first.stop()
        lost = [journal.append(make_result("line-1", i)) for i in range(5, 8)]  # never published live
        second = _publisher(journal, PublisherContext(SITE, uuid.uuid4().hex, journal, lines), **endpoints)
        try:
            b = _journal_and_notify(journal, second, "line-1", 8, 4)
            got = _collect(client, 7)
        finally:
            second.stop()
        assert [e.result.seq for e in got] == [r.seq for r in lost + b]
        assert [e.is_historical for e in got[:3]] == [True] * 3
    finally:
        client.close()


def test_heartbeat_reveals_a_missed_last_result(journal, publisher_context) -> None:
    publisher = _publisher(journal, publisher_context, heartbeat_interval_s=0.1)
    try:
        _journal_and_notify(journal, publisher, "line-1", 0, 1)
        with StreamClient(publisher.pub_endpoint, publisher.router_endpoint, site=SITE,
                          include_heartbeats=True) as client:
            assert client.recv(timeout=5).result.seq == 1  # snapshot
            # The last result of a burst is lost on the way and nothing follows it: only the heartbeat
            # (which carries the line's last seq) can tell. Lose it for real: notified while the
            # publisher's queue is full (queue_size 0 for that moment), it is dropped and counted.
            missed = journal.append(make_result("line-1", 1))
            publisher.config.queue_size = 0
            publisher.notify(missed)
            publisher.config.queue_size = 10_000
            assert publisher.stats()["dropped_queue"] == 1
            events = []
            wait_for(lambda: events.append(client.recv(timeout=0.2)) or any(
                e is not None and e.kind == "result" for e in events), what="catch-up from the heartbeat")
            results = [e for e in events if e is not None and e.kind == "result"]
        assert results[0].result.result_id == missed.result_id and results[0].is_historical
    finally:
        publisher.stop()


def test_status_and_msgpack_encoding(journal, publisher_context) -> None:
    pytest.importorskip("msgpack")
    publisher = _publisher(journal, publisher_context, encoding="msgpack")
    try:
        publisher.publish_status("line-1", {"state": "running", "fps": 12.5})
        # Wait until it is out, else it may come both in the snapshot and live.
        wait_for(lambda: publisher.stats()["events_sent"] >= 1, what="first status out")
        with StreamClient(publisher.pub_endpoint, publisher.router_endpoint, site=SITE) as client:
            status = client.recv(timeout=5)
            assert status.kind == "status" and status.is_historical and status.payload["state"] == "running"
            wait_for(lambda: publisher.stats()["subscriptions"] >= 1, what="subscription")
            sent = _journal_and_notify(journal, publisher, "line-1", 0, 3)
            publisher.publish_status("line-1", {"state": "degraded", "camera": "top lost"})
            events = [client.recv(timeout=5) for _ in range(4)]
        assert [e.kind for e in events] == ["result"] * 3 + ["status"]
        assert events[0].header["encoding"] == "msgpack" and events[0].result == sent[0]
        assert events[3].payload == {"state": "degraded", "camera": "top lost"}
    finally:
        publisher.stop()


def _ask(endpoint: str, payload: bytes) -> list[list[bytes]]:
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(endpoint)
    dealer.send(payload)
    replies = []
    try:
        while dealer.poll(5000):
            frames = dealer.recv_multipart()
            replies.append(frames)
            if len(frames) == 2:
                break
    finally:
        dealer.close()
        ctx.term()
    return replies


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (b"not json", "one JSON object"),
        (b'{"op": "delete_everything"}', "unknown op"),
        (b'{"op": "replay", "since": -3}', "since >= 0"),
        (b'{"op": "replay", "since": "abc"}', "bad replay request"),
        (b'{"op": "trigger", "line": "line-1"}', "does not serve triggers"),
    ],
)
def test_bad_router_requests_get_a_clear_error(journal, publisher_context, request_bytes, expected) -> None:
    publisher = _publisher(journal, publisher_context)
    try:
        replies = _ask(publisher.router_endpoint, request_bytes)
        assert len(replies) == 1 and replies[0][0] == b"error"
        assert expected in json.loads(replies[0][1])["error"]
        # The service keeps serving after a bad request.
        ok = _ask(publisher.router_endpoint, b'{"op": "snapshot", "req_id": 1}')
        assert ok[-1][0] == b"snapshot_end" and json.loads(ok[-1][1])["req_id"] == 1
    finally:
        publisher.stop()


def test_bind_conflict_names_the_endpoint(journal, publisher_context) -> None:
    first = _publisher(journal, publisher_context)
    try:
        with pytest.raises(RuntimeError, match="pub_endpoint"):
            _publisher(journal, publisher_context, pub_endpoint=first.pub_endpoint)
    finally:
        first.stop()


def test_replay_reader_is_its_own_connection(tmp_path: Path, publisher_context) -> None:
    journal = ResultJournal(tmp_path / "j.sqlite")
    publisher = _publisher(journal, PublisherContext(SITE, "b", journal))
    try:
        assert publisher._reader is not journal and publisher._reader.path == journal.path
    finally:
        publisher.stop()
        journal.close()


def test_a_client_that_stops_reading_does_not_hold_the_router(journal, publisher_context) -> None:
    for i in range(1000):
        journal.append(make_result("line-1", i))
    publisher = _publisher(journal, publisher_context, client_send_timeout_s=0.3)
    ctx = zmq.Context()
    greedy = ctx.socket(zmq.DEALER)
    greedy.linger = 0
    greedy.rcvhwm = 1
    greedy.connect(publisher.router_endpoint)
    try:
        for _ in range(8):  # 8 pages of 1000 results, never read: more than any pipe holds
            greedy.send(b'{"op": "replay", "since": 0}')
        wait_for(lambda: publisher.stats()["abandoned_answers"] >= 1, what="the greedy client given up")
        answer = _ask(publisher.router_endpoint, b'{"op": "snapshot", "req_id": 5}')
        assert answer[-1][0] == b"snapshot_end" and json.loads(answer[-1][1])["last_seq"] == 1000
    finally:
        greedy.close()
        ctx.term()
        publisher.stop()


def test_trigger_requests_that_cannot_run_are_answered_with_the_reason(
    journal, tiny_detect_onnx, synthetic_images
) -> None:
    from edge_agent.config import LineConfig
    from edge_agent.line import LineRuntime

    line = LineRuntime(
        LineConfig.model_validate({
            "name": "conveyor",
            "cameras": [{"name": "top", "source": {"type": "folder", "path": str(synthetic_images)}}],
            "trigger": {"type": "free_run"},
            "model": {"path": str(tiny_detect_onnx)},
            "recipes": {"default": {}},
        }),
        site=SITE, journal=journal,
    )
    context = PublisherContext(SITE, uuid.uuid4().hex, journal, {"conveyor": line})
    publisher = _publisher(journal, context, allow_trigger=True)
    try:
        unknown = _ask(publisher.router_endpoint, b'{"op": "trigger", "line": "nope", "req_id": 1}')
        assert unknown[-1][0] == b"error"
        assert "unknown line 'nope'" in json.loads(unknown[-1][1])["error"]
        assert "conveyor" in json.loads(unknown[-1][1])["error"]
        refused = _ask(publisher.router_endpoint, b'{"op": "trigger", "line": "conveyor", "part_id": "P"}')
        message = json.loads(refused[-1][1])["error"]
        assert refused[-1][0] == b"error" and "refused the trigger" in message and "free_run" in message
        assert journal.count() == 0
    finally:
        publisher.stop()


def test_a_reset_journal_is_reported_not_silently_skipped(journal, publisher_context) -> None:
    from mes.client import JournalBehindError

    publisher = _publisher(journal, publisher_context)
    try:
        _journal_and_notify(journal, publisher, "line-1", 0, 5)
        client = StreamClient(publisher.pub_endpoint, publisher.router_endpoint, since_seq=120)
        with pytest.raises(JournalBehindError, match="ends at seq 5 but this client already processed"):
            client.start()
        client.close()
    finally:
        publisher.stop()
