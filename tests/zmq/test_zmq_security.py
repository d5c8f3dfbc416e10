"""CURVE on real sockets: authorised keys get in, everyone else receives nothing."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import zmq
from typer.testing import CliRunner
from zmq_support import SITE, make_result, wait_for

from contract.zmq_security import (
    ClientSecurity,
    CurveClientConfig,
    CurveServerConfig,
    ServerSecurity,
    generate_keypair,
    load_public_key,
    load_secret_pair,
)
from edge_agent.cli import app
from edge_agent.publishers.mes_delivery import MesDeliveryConfig, MesDeliveryPublisher
from edge_agent.publishers.zmq_pub import ZmqPublisher, ZmqPublisherConfig
from mes.client import StreamClient
from mes.receiver import MesReceiver


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """agent (server), client (authorised), intruder (not authorised); `authorized` = trusted client keys."""
    folder = tmp_path / "keys"
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    out = {"authorized": authorized}
    for name in ("agent", "client", "intruder"):
        pair = generate_keypair(folder, name)
        out[name] = pair.secret_file
        out[f"{name}.pub"] = pair.public_file
    (authorized / "client.key").write_bytes(out["client.pub"].read_bytes())
    return out


def _curve_publisher(keys, journal, context) -> ZmqPublisher:
    config = ZmqPublisherConfig(
        pub_endpoint="tcp://127.0.0.1:*", router_endpoint="tcp://127.0.0.1:*",
        curve=CurveServerConfig(secret_key_file=keys["agent"], authorized_keys_dir=keys["authorized"]),
    )
    publisher = ZmqPublisher(config, context)
    publisher.start(journal)
    return publisher


def _client_security(keys, name: str) -> ClientSecurity:
    return ClientSecurity(curve=CurveClientConfig(secret_key_file=keys[name],
                                                  server_public_key_file=keys["agent.pub"]))


def _raw_sub(ctx: zmq.Context, endpoint: str, keys, name: str | None) -> zmq.Socket:
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    if name is not None:
        sub.curve_publickey, sub.curve_secretkey = load_secret_pair(keys[name])
        sub.curve_serverkey = load_public_key(keys["agent.pub"])
    sub.subscribe(b"")
    sub.connect(endpoint)
    return sub


def test_only_authorised_keys_receive(keys, journal, publisher_context) -> None:
    publisher = _curve_publisher(keys, journal, publisher_context)
    ctx = zmq.Context()
    intruder = _raw_sub(ctx, publisher.pub_endpoint, keys, "intruder")
    plain = _raw_sub(ctx, publisher.pub_endpoint, keys, None)
    try:
        with StreamClient(publisher.pub_endpoint, publisher.router_endpoint, site=SITE,
                          security=_client_security(keys, "client")) as client:
            wait_for(lambda: publisher.stats()["subscriptions"] >= 1, what="authorised subscription")
            wait_for(lambda: publisher._curve.authorized.denied >= 1, what="intruder refused by ZAP")
            for i in range(20):
                publisher.notify(journal.append(make_result("line-1", i)))
            got = [client.recv(timeout=5) for _ in range(20)]
            assert [e.result.seq for e in got] == list(range(1, 21))
        # Both were connected the whole time the 20 results went out: nothing reached them.
        assert intruder.poll(500) == 0 and plain.poll(100) == 0
        assert publisher.stats()["subscriptions"] <= 1  # their subscriptions never arrived

        # Intruder's ROUTER requests go nowhere either.
        rogue = StreamClient(publisher.pub_endpoint, publisher.router_endpoint, site=SITE,
                             security=_client_security(keys, "intruder"), request_timeout_s=1.0)
        with pytest.raises(TimeoutError):
            rogue.start()
        rogue.close()
    finally:
        intruder.close()
        plain.close()
        ctx.term()
        publisher.stop()


def test_key_added_to_folder_is_accepted_without_restart(keys, journal, publisher_context) -> None:
    publisher = _curve_publisher(keys, journal, publisher_context)
    try:
        (keys["authorized"] / "intruder.key").write_bytes(keys["intruder.pub"].read_bytes())
        with StreamClient(publisher.pub_endpoint, publisher.router_endpoint, site=SITE,
                          security=_client_security(keys, "intruder")) as client:
            wait_for(lambda: publisher.stats()["subscriptions"] >= 1, what="subscription")
            publisher.notify(journal.append(make_result("line-1", 0)))
            assert client.recv(timeout=5).result.seq == 1
    finally:
        publisher.stop()


def test_acked_delivery_over_curve(tmp_path: Path, keys, journal, publisher_context) -> None:
    # The MES is the server here: it authorises the agent's key.
    mes_auth = tmp_path / "mes_authorized"
    mes_auth.mkdir()
    (mes_auth / "agent.key").write_bytes(keys["agent.pub"].read_bytes())
    mes_pair = generate_keypair(tmp_path / "mes_keys", "mes")
    receiver = MesReceiver(
        "tcp://127.0.0.1:*", tmp_path / "mes.sqlite",
        ServerSecurity(curve=CurveServerConfig(secret_key_file=mes_pair.secret_file,
                                               authorized_keys_dir=mes_auth)),
    )
    receiver.start()

    def delivery(secret: Path, name: str) -> MesDeliveryPublisher:
        config = MesDeliveryConfig(name=name, endpoint=receiver.endpoint, resend_initial_s=0.1,
                                   resend_max_s=0.3,
                                   curve=CurveClientConfig(secret_key_file=secret,
                                                           server_public_key_file=mes_pair.public_file))
        return MesDeliveryPublisher(config, publisher_context)

    agent, rogue = delivery(keys["agent"], "mes"), delivery(keys["intruder"], "rogue")
    agent.start(journal)
    rogue.start(journal)
    try:
        for i in range(30):
            result = journal.append(make_result("line-1", i))
            agent.notify(result)
            rogue.notify(result)
        wait_for(lambda: agent.stats()["backlog"] == 0, what="delivery over CURVE")
        assert receiver.store.count() == 30
        assert rogue.stats()["delivered"] == 0 and rogue.stats()["backlog"] == 30
        assert receiver.counters["duplicate"] == 0  # the rogue's copies never got in
    finally:
        agent.stop(timeout=0.5)
        rogue.stop(timeout=0.5)
        receiver.stop()


def test_curve_is_the_default_and_missing_keys_are_named(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError, match=r"curve\.secret_key_file"):
        ZmqPublisherConfig()
    with pytest.raises(pydantic.ValidationError, match="server_public_key_file"):
        MesDeliveryConfig()
    with pytest.raises(FileNotFoundError, match=r"nope\.key_secret"):
        load_secret_pair(tmp_path / "nope.key_secret")
    pair = generate_keypair(tmp_path, "a")
    with pytest.raises(ValueError, match="holds no secret key"):
        load_secret_pair(pair.public_file)
    with pytest.raises(FileExistsError, match=r"a\.key"):
        generate_keypair(tmp_path, "a")
    garbage = tmp_path / "garbage.key"
    garbage.write_text("hello\n")
    with pytest.raises(ValueError, match=r"garbage\.key"):
        load_public_key(garbage)


def test_cli_zmq_keys(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["zmq", "keys", "agent", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "agent.key").is_file() and (tmp_path / "agent.key_secret").stat().st_mode & 0o077 == 0
    assert len(load_public_key(tmp_path / "agent.key")) == 40
    again = runner.invoke(app, ["zmq", "keys", "agent", "--out", str(tmp_path)])
    assert again.exit_code == 1 and "exists already" in again.output


def test_missing_key_files_stop_the_start_with_the_file_named(tmp_path: Path, journal, publisher_context):
    missing = tmp_path / "nope.key_secret"
    delivery = MesDeliveryPublisher(
        MesDeliveryConfig(curve=CurveClientConfig(secret_key_file=missing, server_public_key_file=missing)),
        publisher_context,
    )
    with pytest.raises(FileNotFoundError, match=r"nope\.key_secret"):
        delivery.start(journal)
    delivery.stop(timeout=0.1)  # safe after a failed start

    publisher = ZmqPublisher(
        ZmqPublisherConfig(pub_endpoint="tcp://127.0.0.1:*",
                           curve=CurveServerConfig(secret_key_file=missing, authorized_keys_dir=tmp_path)),
        publisher_context,
    )
    with pytest.raises(FileNotFoundError, match=r"nope\.key_secret"):
        publisher.start(journal)
    publisher.stop(timeout=0.1)


def test_bad_endpoint_is_named(journal, publisher_context) -> None:
    delivery = MesDeliveryPublisher(MesDeliveryConfig(security="plain", endpoint="tcpx://mes:5560"),
                                    publisher_context)
    with pytest.raises(RuntimeError, match=r"bad endpoint 'tcpx://mes:5560'"):
        delivery.start(journal)
