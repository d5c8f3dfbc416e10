"""Removing a client's key from the authorised folder cuts off its *live* connection (not only its next
handshake); other clients keep receiving; a client without CURVE is refused, logged and counted."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import zmq
from test_zmq_security import _curve_publisher, _raw_sub, keys  # noqa: F401 (keys is a fixture)
from zmq_support import make_result, wait_for

from contract.zmq_security import (
    CurveClientConfig,
    CurveServerConfig,
    ServerSecurity,
    generate_keypair,
    load_public_key,
    load_secret_pair,
)
from edge_agent.publishers.mes_delivery import MesDeliveryConfig, MesDeliveryPublisher
from mes.receiver import MesReceiver


def _drain(sock: zmq.Socket, wait_ms: int = 300) -> list[list[bytes]]:
    out = []
    while sock.poll(wait_ms):
        out.append(sock.recv_multipart())
        wait_ms = 100
    return out


def test_removed_key_loses_its_live_subscription_others_keep_theirs(keys, journal, publisher_context) -> None:  # noqa: F811
    (keys["authorized"] / "intruder.key").write_bytes(keys["intruder.pub"].read_bytes())  # a 2nd client
    publisher = _curve_publisher(keys, journal, publisher_context)
    ctx = zmq.Context()
    leaving = _raw_sub(ctx, publisher.pub_endpoint, keys, "client")
    staying = _raw_sub(ctx, publisher.pub_endpoint, keys, "intruder")
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.curve_publickey, dealer.curve_secretkey = load_secret_pair(keys["client"])
    dealer.curve_serverkey = load_public_key(keys["agent.pub"])
    dealer.connect(publisher.router_endpoint)
    try:
        wait_for(lambda: publisher.stats()["subscriptions"] >= 2, what="both subscriptions")
        dealer.send(b'{"op": "snapshot", "req_id": 1}')
        assert dealer.poll(5000) and dealer.recv_multipart()  # the ROUTER knows this key's connection
        _drain(dealer)
        for i in range(5):
            publisher.notify(journal.append(make_result("line-1", i)))
        assert len(_drain(leaving, 3000)) >= 5 and len(_drain(staying, 3000)) >= 5

        denied_before = publisher.stats()["denied_clients"]
        (keys["authorized"] / "client.key").unlink()  # the operator removes the client
        wait_for(lambda: publisher.stats()["dropped_clients"] >= 2, what="PUB and ROUTER connections dropped")
        wait_for(lambda: publisher.stats()["denied_clients"] > denied_before, what="its reconnect refused")
        for i in range(5, 25):
            publisher.notify(journal.append(make_result("line-1", i)))
        time.sleep(0.5)
        heartbeats_or_results = _drain(leaving, 500)
        assert not [m for m in heartbeats_or_results if m[0].endswith(b"/result")]  # cut off
        assert len([m for m in _drain(staying, 3000) if m[0].endswith(b"/result")]) == 20  # unaffected
        with contextlib.suppress(zmq.Again):  # no connection left to queue the request on
            dealer.send(b'{"op": "snapshot", "req_id": 2}', zmq.NOBLOCK)
        assert dealer.poll(1000) == 0  # the ROUTER no longer answers it
    finally:
        for sock in (leaving, staying, dealer):
            sock.close(0)
        ctx.term()
        publisher.stop()


def test_plain_client_is_counted_and_logged(keys, journal, publisher_context, caplog) -> None:  # noqa: F811
    publisher = _curve_publisher(keys, journal, publisher_context)
    ctx = zmq.Context()
    with caplog.at_level(logging.WARNING, logger="contract.zmq_security"):
        plain = _raw_sub(ctx, publisher.pub_endpoint, keys, None)
        try:
            for i in range(3):
                publisher.notify(journal.append(make_result("line-1", i)))
            wait_for(lambda: publisher.stats()["denied_clients"] >= 1, what="plain client counted")
            assert plain.poll(300) == 0
        finally:
            plain.close(0)
            ctx.term()
            publisher.stop()
    assert any("client without CURVE" in r.getMessage() for r in caplog.records)


def test_mes_receiver_drops_an_agent_whose_key_is_removed(
    tmp_path: Path,
    keys,  # noqa: F811
    journal,
    publisher_context,
) -> None:
    mes_auth = tmp_path / "mes_authorized"
    mes_auth.mkdir()
    (mes_auth / "agent.key").write_bytes(keys["agent.pub"].read_bytes())
    mes_pair = generate_keypair(tmp_path / "mes_keys", "mes")
    security = ServerSecurity(
        curve=CurveServerConfig(secret_key_file=mes_pair.secret_file, authorized_keys_dir=mes_auth)
    )
    receiver = MesReceiver("tcp://127.0.0.1:*", tmp_path / "mes.sqlite", security)
    receiver.start()
    config = MesDeliveryConfig(
        name="mes",
        endpoint=receiver.endpoint,
        resend_initial_s=0.1,
        resend_max_s=0.3,
        curve=CurveClientConfig(secret_key_file=keys["agent"], server_public_key_file=mes_pair.public_file),
    )
    delivery = MesDeliveryPublisher(config, publisher_context)
    delivery.start(journal)
    try:
        for i in range(10):
            delivery.notify(journal.append(make_result("line-1", i)))
        wait_for(lambda: receiver.store.count() == 10, what="delivery over CURVE")
        (mes_auth / "agent.key").unlink()
        wait_for(lambda: receiver._curve.dropped >= 1, what="the agent's connection dropped")
        for i in range(10, 20):
            delivery.notify(journal.append(make_result("line-1", i)))
        time.sleep(1.0)
        assert receiver.store.count() == 10  # nothing more gets in; the results wait in the journal
        assert delivery.stats()["backlog"] == 10
    finally:
        delivery.stop(timeout=0.5)
        receiver.stop()
