"""StreamClient catching up on a busy line: heartbeats queued during a long replay carry seqs below what the
replay delivered; they are stale, not a journal reset. A real reset is still reported, with advice that
does not replay everything by default."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
from zmq_support import SITE, free_port, make_result

from edge_agent.journal import ResultJournal
from edge_agent.publishers.base import PublisherContext
from edge_agent.publishers.zmq_pub import ZmqPublisher, ZmqPublisherConfig
from mes.client import JournalBehindError, StreamClient


def _publisher(journal: ResultJournal, pub: str, router: str) -> ZmqPublisher:
    config = ZmqPublisherConfig(
        pub_endpoint=pub, router_endpoint=router, security="plain", heartbeat_interval_s=0.01
    )
    publisher = ZmqPublisher(config, PublisherContext(site=SITE, boot_id=uuid.uuid4().hex, journal=journal))
    publisher.start(journal)
    return publisher


def test_catching_up_6300_behind_on_a_busy_line_raises_no_false_reset(tmp_path: Path) -> None:
    journal = ResultJournal(tmp_path / "journal.sqlite")
    journal.append_many([make_result("line-1", i) for i in range(6300)])
    publisher = _publisher(journal, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
    stop = threading.Event()

    def busy_line() -> None:  # the line keeps producing while the client replays
        i = 10_000
        while not stop.is_set():
            for result in journal.append_many([make_result("line-1", i + k) for k in range(5)]):
                publisher.notify(result)
            i += 5
            time.sleep(0.005)

    writer = threading.Thread(target=busy_line, daemon=True)
    writer.start()
    client = StreamClient(publisher.pub_endpoint, publisher.router_endpoint, since_seq=0)
    try:
        time.sleep(0.3)  # heartbeats and live results pile up before and during the replay
        client.start()
        seqs = []
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            event = client.recv(timeout=0.5)
            if event is not None and event.kind == "result":
                seqs.append(event.result.seq)
        stop.set()
        writer.join()
        assert seqs[0] == 1 and seqs == list(range(1, len(seqs) + 1))  # every result once, in order
        assert len(seqs) > 6300
        assert client.counters.stale_heartbeats >= 1  # the case that used to raise JournalBehindError
    finally:
        stop.set()
        client.close()
        publisher.stop()
        journal.close()


def test_a_journal_reset_while_following_is_still_reported(tmp_path: Path) -> None:
    pub, router = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    journal = ResultJournal(tmp_path / "a.sqlite")
    publisher = _publisher(journal, pub, router)
    for result in journal.append_many([make_result("line-1", i) for i in range(50)]):
        publisher.notify(result)
    client = StreamClient(pub, router, since_seq=0)
    client.start()
    try:
        while client.last_seq.get("line-1") != 50:
            client.recv(timeout=5)
        publisher.stop()
        journal.close()
        other = ResultJournal(tmp_path / "b.sqlite")  # a new, almost empty journal behind the same ports
        other.append_many([make_result("line-1", i) for i in range(3)])
        publisher = _publisher(other, pub, router)
        publisher.notify(other.append(make_result("line-1", 3)))  # seq 4: a duplicate to a naive client
        with pytest.raises(JournalBehindError) as exc:
            for _ in range(500):
                client.recv(timeout=0.1)
        assert "ends at seq 4 but this client already processed 50" in str(exc.value)
        assert "since_seq=None to take only new results" in str(exc.value)
        other.close()
    finally:
        client.close()
        publisher.stop()
