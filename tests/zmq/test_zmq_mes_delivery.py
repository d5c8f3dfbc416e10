"""Acknowledged delivery to the reference MES receiver: real DEALER/ROUTER sockets, real SQLite both ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import zmq
from zmq_support import free_port, make_result, wait_for

from contract.zmq_security import ServerSecurity
from contract.zmq_wire import encode_result
from edge_agent.journal import ResultJournal
from edge_agent.publishers.base import PublisherContext
from edge_agent.publishers.mes_delivery import MesDeliveryConfig, MesDeliveryPublisher
from mes.receiver import MesReceiver
from mes.store import ResultStore

PLAIN = ServerSecurity(security="plain")
REPO = Path(__file__).resolve().parents[2]


def _delivery(endpoint: str, context: PublisherContext, **overrides) -> MesDeliveryPublisher:
    config = MesDeliveryConfig(endpoint=endpoint, security="plain", resend_initial_s=0.1, resend_max_s=0.5,
                               **overrides)
    return MesDeliveryPublisher(config, context)


def _journal_ids(journal: ResultJournal) -> list[str]:
    return [r.result_id for r in journal.iter_since(0)]


def test_every_result_stored_once_and_cursor_advances(tmp_path: Path, journal, publisher_context) -> None:
    receiver = MesReceiver("tcp://127.0.0.1:*", tmp_path / "mes.sqlite", PLAIN, durability="normal")
    receiver.start()
    publisher = _delivery(receiver.endpoint, publisher_context, window=16)
    publisher.start(journal)
    try:
        for i in range(400):
            publisher.notify(journal.append(make_result(f"line-{i % 3}", i, "NG" if i % 5 == 0 else "OK")))
        wait_for(lambda: publisher.stats()["backlog"] == 0, what="backlog to drain")
        stats = publisher.stats()
        assert stats["delivered"] == 400 and stats["dropped"] == 0
        assert stats["cursor"] == journal.last_seq() == journal.cursor("mes")
        assert stats["oldest_undelivered_s"] == 0.0
        assert receiver.store.count() == 400
        assert sorted(receiver.store.result_ids()) == sorted(_journal_ids(journal))
        stored = receiver.store.get(journal.get(5).result_id)
        assert stored == journal.get(5)  # the whole body survives, defects and timings included
    finally:
        publisher.stop()
        receiver.stop()


def test_receiver_down_for_a_while_then_everything_arrives(tmp_path: Path, journal, publisher_context):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    publisher = _delivery(endpoint, publisher_context, window=8)
    publisher.start(journal)
    receiver: MesReceiver | None = None
    try:
        for i in range(100):
            publisher.notify(journal.append(make_result("line-1", i)))
        # Nobody listens: nothing is lost, the backlog is visible, and the window stays bounded.
        wait_for(lambda: publisher.stats()["oldest_undelivered_s"] > 0.2, what="an aging backlog")
        stats = publisher.stats()
        assert stats["backlog"] == 100 and stats["in_flight"] <= 8 and stats["delivered"] == 0

        receiver = MesReceiver(endpoint, tmp_path / "mes.sqlite", PLAIN)
        receiver.start()
        wait_for(lambda: receiver.store.count() >= 50, what="first half delivered")
        receiver.stop()  # a second outage in the middle of the catch-up
        for i in range(100, 150):
            publisher.notify(journal.append(make_result("line-1", i)))
        receiver = MesReceiver(endpoint, tmp_path / "mes.sqlite", PLAIN)
        receiver.start()
        wait_for(lambda: publisher.stats()["backlog"] == 0, what="backlog to drain after the outages")
        assert receiver.store.count() == 150
        assert sorted(receiver.store.result_ids()) == sorted(_journal_ids(journal))
    finally:
        publisher.stop()
        if receiver is not None:
            receiver.stop()


def test_resends_are_stored_once(tmp_path: Path, journal, publisher_context) -> None:
    """Two delivery cursors over one journal = every result sent twice; the MES keeps one copy."""
    receiver = MesReceiver("tcp://127.0.0.1:*", tmp_path / "mes.sqlite", PLAIN, durability="normal")
    receiver.start()
    for i in range(60):
        journal.append(make_result("line-1", i))
    first = _delivery(receiver.endpoint, publisher_context, name="mes-a")
    second = _delivery(receiver.endpoint, publisher_context, name="mes-b")
    first.start(journal)
    second.start(journal)
    try:
        wait_for(lambda: first.stats()["backlog"] == second.stats()["backlog"] == 0, what="both cursors")
        assert receiver.store.count() == 60
        assert receiver.counters["duplicate"] == 60 and receiver.counters["stored"] == 60
        assert first.stats()["duplicates"] + second.stats()["duplicates"] == 60
    finally:
        first.stop()
        second.stop()
        receiver.stop()


def test_unparseable_message_is_quarantined_and_acknowledged(tmp_path: Path, journal) -> None:
    receiver = MesReceiver("tcp://127.0.0.1:*", tmp_path / "mes.sqlite", PLAIN)
    receiver.start()
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(receiver.endpoint)
    try:
        topic, header, _body = encode_result(journal.append(make_result()), boot_id="b")
        dealer.send_multipart([topic, header, b'{"verdict": "MAYBE"}'])
        assert dealer.poll(10_000), "the receiver must answer a bad message too"
        kind, body = dealer.recv_multipart()
        assert kind == b"ack"
        (seq, result_id, status), = json.loads(body)["acks"]
        assert (seq, status) == (1, "rejected") and result_id == json.loads(header)["result_id"]
        assert receiver.store.count() == 0 and receiver.store.rejected_count() == 1
    finally:
        dealer.close()
        ctx.term()
        receiver.stop()


def test_resend_max_below_initial_is_refused(publisher_context) -> None:
    config = MesDeliveryConfig(security="plain", resend_initial_s=5, resend_max_s=1)
    try:
        MesDeliveryPublisher(config, publisher_context)
    except ValueError as exc:
        assert "resend_max_s" in str(exc)
    else:
        raise AssertionError("a max back-off below the initial one must be refused")


def _start_driver(journal_path: Path, endpoint: str, count: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "zmq" / "zmq_agent_driver.py"), str(journal_path),
         "--mes", endpoint, "--count", str(count)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )


def test_kill_9_agent_mid_stream_then_restart_delivers_everything_once(tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    receiver = MesReceiver(endpoint, tmp_path / "mes.sqlite", PLAIN)
    receiver.start()
    journal_path = tmp_path / "agent" / "journal.sqlite"
    total = 600
    agents: list[subprocess.Popen] = []
    try:
        agent = _start_driver(journal_path, endpoint, total)
        agents.append(agent)
        assert agent.stdout is not None
        # Kill it while it is both journaling and delivering (some acked, some in flight, some not sent).
        killed_after = None
        for line in agent.stdout:
            if line.startswith("seq ") and int(line.split()[1]) >= 250 and receiver.store.count() > 0:
                killed_after = int(line.split()[1])
                break
        assert killed_after is not None, agent.stderr.read() if agent.stderr else "driver ended early"
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(10)
        assert agent.returncode == -signal.SIGKILL

        journal = ResultJournal(journal_path)
        journaled_at_kill = journal.last_seq()
        stored_at_kill = receiver.store.count()
        assert killed_after <= journaled_at_kill < total
        assert stored_at_kill < total

        restarted = _start_driver(journal_path, endpoint, total)
        agents.append(restarted)
        out, err = restarted.communicate(timeout=120)
        assert restarted.returncode == 0, err
        assert "drained" in out

        # Every journaled result exactly once: same ids, and the primary key makes doubles impossible,
        # so equal counts mean nothing is missing either.
        ids = _journal_ids(journal)
        assert len(ids) == total == journal.last_seq()
        assert receiver.store.count() == total
        assert sorted(receiver.store.result_ids()) == sorted(ids)
        journal.close()
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait(10)
        receiver.stop()


def test_store_reopened_after_receiver_restart_keeps_dedup(tmp_path: Path) -> None:
    path = tmp_path / "mes.sqlite"
    from mes.store import StoreItem

    result = make_result()
    result = result.model_copy(update={"seq": 1})
    first = ResultStore(path)
    assert first.store_batch([StoreItem(result=result, boot_id="b")]) == ["stored"]
    first.close()
    again = ResultStore(path)
    assert again.store_batch([StoreItem(result=result, boot_id="b2")]) == ["duplicate"]
    assert again.count() == 1
    again.close()


def test_results_removed_by_retention_before_delivery_are_counted(tmp_path: Path, journal, publisher_context):
    for i in range(10):
        journal.append(make_result("line-1", i))
    journal.enforce_retention(max_rows=4)  # a long MES outage outlived the journal's retention
    receiver = MesReceiver("tcp://127.0.0.1:*", tmp_path / "mes.sqlite", PLAIN, durability="normal")
    receiver.start()
    publisher = _delivery(receiver.endpoint, publisher_context)
    publisher.start(journal)
    try:
        wait_for(lambda: publisher.stats()["backlog"] == 0, what="delivery of what is left")
        stats = publisher.stats()
        assert stats["expired_undelivered"] == 6 and stats["delivered"] == 4
        assert sorted(receiver.store.result_ids()) == sorted(_journal_ids(journal))
    finally:
        publisher.stop()
        receiver.stop()
