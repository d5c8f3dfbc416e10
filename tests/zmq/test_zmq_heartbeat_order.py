"""Issue 28 item 20: a heartbeat (or status) never announces a seq whose result is still queued.

docs/zmq.md: "A heartbeat whose `seq` is greater than `last[L]` means the last results were missed". If a
heartbeat overtakes a result still in the sender's queue, a client replays that result and then skips
its live copy as a duplicate: the stream's order is not what the docs promise. A real SUB socket reads
everything while results are notified as fast as a busy line does, with a heartbeat every millisecond.
"""

from __future__ import annotations

import time

import zmq
from zmq_support import SITE, make_result, wait_for

from contract.zmq_wire import decode
from edge_agent.publishers.zmq_pub import ZmqPublisher, ZmqPublisherConfig


def test_heartbeats_and_statuses_never_announce_a_queued_result(journal, publisher_context) -> None:
    config = ZmqPublisherConfig(
        pub_endpoint="tcp://127.0.0.1:*", router_endpoint=None, security="plain",
        heartbeat_interval_s=0.001, send_hwm=1_000_000, queue_size=1_000_000,
    )
    publisher = ZmqPublisher(config, publisher_context)
    publisher.start(journal)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.subscribe(f"insp.v1/{SITE}/line-1/".encode())
    sub.connect(publisher.pub_endpoint)
    total = 4000
    try:
        wait_for(lambda: publisher.stats()["subscriptions"] >= 1, what="subscription")
        stored = journal.append_many([make_result("line-1", i) for i in range(total)])
        for i, result in enumerate(stored):
            publisher.notify(result)
            if i % 97 == 0:
                publisher.publish_status("line-1", {"state": "running", "n": i})
            if i % 20 == 0:
                time.sleep(0.001)  # a line's pace: the sender's heartbeats fall between the results
        last_result = 0
        announced: list[tuple[str, int, int]] = []  # (kind, seq announced, last result seq received)
        results = 0
        deadline = time.monotonic() + 60
        while results < total and time.monotonic() < deadline:
            if not sub.poll(1000):
                continue
            message = decode(sub.recv_multipart())
            if message.kind == "result":
                assert message.seq == last_result + 1 or last_result == 0  # in order, none lost
                last_result = message.seq
                results += 1
            elif message.seq is not None:
                announced.append((message.kind, message.seq, last_result))
    finally:
        sub.close(0)
        ctx.term()
        publisher.stop()
    assert results == total
    assert sum(1 for kind, *_ in announced if kind == "heartbeat") > 0
    ahead = [a for a in announced if a[1] > a[2]]
    assert ahead == [], f"{len(ahead)} of {len(announced)} announced a seq still queued, e.g. {ahead[:5]}"
