"""`edge-inspect mes listen` as a real process, fed by the real acknowledged-delivery publisher."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner
from zmq_support import free_port, make_result, wait_for

from edge_agent.cli import app
from edge_agent.publishers.mes_delivery import MesDeliveryConfig, MesDeliveryPublisher
from mes.store import ResultStore

REPO = Path(__file__).resolve().parents[2]


def test_mes_listen_stores_every_result_and_stops_on_sigterm(tmp_path: Path, journal, publisher_context):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    store_path = tmp_path / "results.sqlite"
    listener = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "mes", "listen", "--endpoint", endpoint,
         "--store", str(store_path), "--plain"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    publisher = MesDeliveryPublisher(
        MesDeliveryConfig(endpoint=endpoint, security="plain", resend_initial_s=0.2, resend_max_s=1.0),
        publisher_context,
    )
    publisher.start(journal)
    try:
        for i in range(25):
            publisher.notify(journal.append(make_result("line-1", i, "NG" if i == 3 else "OK")))
        wait_for(lambda: publisher.stats()["backlog"] == 0, timeout=60, what="delivery to `mes listen`")
    finally:
        publisher.stop(timeout=0.5)
        listener.send_signal(signal.SIGTERM)
        out, err = listener.communicate(timeout=20)
    assert listener.returncode == 0, err
    assert f"listening on {endpoint}" in out
    assert out.count("stored ") == 25 and "part=P-000003 NG" in out
    store = ResultStore(store_path)
    assert store.count() == 25
    store.close()


def test_mes_listen_refuses_to_run_without_keys_or_plain(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["mes", "listen", "--store", str(tmp_path / "r.sqlite")])
    assert result.exit_code != 0
    assert "--curve-secret" in result.output and "--plain" in result.output


def test_zmq_tail_prints_replay_then_live(journal, publisher_context) -> None:
    import json

    from edge_agent.publishers.zmq_pub import ZmqPublisher, ZmqPublisherConfig

    publisher = ZmqPublisher(
        ZmqPublisherConfig(pub_endpoint="tcp://127.0.0.1:*", router_endpoint="tcp://127.0.0.1:*",
                           security="plain"),
        publisher_context,
    )
    publisher.start(journal)
    for i in range(3):
        publisher.notify(journal.append(make_result("line-1", i)))
    tail = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "zmq", "tail", "--plain", "--since", "0",
         "--pub", publisher.pub_endpoint, "--router", publisher.router_endpoint],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert tail.stdout is not None
        replayed = [json.loads(tail.stdout.readline()) for _ in range(3)]
        assert [(e["kind"], e["historical"], e["body"]["seq"]) for e in replayed] == [
            ("result", True, 1), ("result", True, 2), ("result", True, 3)]
        wait_for(lambda: publisher.stats()["subscriptions"] >= 1, what="tail subscribed")
        publisher.notify(journal.append(make_result("line-1", 3, "NG")))
        live = json.loads(tail.stdout.readline())
        assert (live["historical"], live["body"]["seq"], live["body"]["verdict"]) == (False, 4, "NG")
    finally:
        tail.terminate()
        tail.wait(10)
        publisher.stop()
