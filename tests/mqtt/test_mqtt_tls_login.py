"""TLS with client certificates and a password file on a real mosquitto; every way of getting it wrong
is one clear line, from the publisher's check and from `edge-inspect config check`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mqtt_support import (
    MOSQUITTO,
    MOSQUITTO_PASSWD,
    SITE,
    SKIP_REASON,
    Mosquitto,
    Recorder,
    free_port,
    make_certs,
    make_password_file,
    make_result,
    wait_for,
)
from typer.testing import CliRunner

from edge_agent.cli import app
from edge_agent.journal import ResultJournal
from edge_agent.publishers.base import PublisherContext
from edge_agent.publishers.mqtt_pub import MqttPublisher, MqttPublisherConfig, probe_broker


@pytest.fixture
def secure_broker(tmp_path: Path):
    if MOSQUITTO is None or MOSQUITTO_PASSWD is None:
        pytest.skip(SKIP_REASON)
    certs = make_certs(tmp_path / "certs")
    passwords = make_password_file(tmp_path / "passwd", {"press": "s3cret", "reader": "r3ad"})
    broker = Mosquitto(
        tmp_path / "broker",
        password_file=passwords,
        require_certificate=True,
        tls={"ca_file": certs["ca_file"], "cert_file": certs["server_cert"], "key_file": certs["server_key"]},
    ).start()
    yield broker, certs, tmp_path
    broker.stop()


def _tls(certs: dict[str, Path], **changes) -> dict:
    return {
        "ca_file": certs["ca_file"],
        "cert_file": certs["client_cert"],
        "key_file": certs["client_key"],
        **changes,
    }


def test_tls_client_certificate_and_password(
    secure_broker, journal: ResultJournal, context: PublisherContext
):
    broker, certs, tmp = secure_broker
    (tmp / "password").write_text("s3cret\n")
    config = MqttPublisherConfig(
        port=broker.port, tls=_tls(certs), username="press", password_file=tmp / "password"
    )
    recorder = Recorder(
        broker.port,
        [f"edge-inspect/{SITE}/+/result", "spBv1.0/#"],
        login=("reader", "r3ad"),
        tls={"ca_file": certs["ca_file"], "cert_file": certs["client_cert"], "key_file": certs["client_key"]},
    ).start()
    publisher = MqttPublisher(config, context)
    publisher.start(journal)
    try:
        for n in range(1, 11):
            publisher.notify(journal.append(make_result(n)))
        wait_for(
            lambda: publisher.stats()["plain_cursor"] == publisher.stats()["sparkplug_cursor"] == 10,
            10,
            "10 results acknowledged over TLS",
        )
        wait_for(
            lambda: len(recorder.snapshot(f"edge-inspect/{SITE}/press/result")) == 10, 5, "10 results read"
        )
    finally:
        publisher.stop()
        recorder.stop()
    assert probe_broker(config) is None


def test_each_mistake_is_one_clear_line(secure_broker):
    broker, certs, tmp = secure_broker
    port = broker.port

    def problem(**fields) -> str:
        message = probe_broker(MqttPublisherConfig(port=port, connect_timeout_s=3, **fields))
        assert message is not None and "\n" not in message
        return message

    good = {"tls": _tls(certs), "username": "press"}
    assert "refused the login for user 'press': not authorised" in problem(
        **good, password="wrong"
    ) or "refused the login for user 'press': bad user name or password" in problem(**good, password="wrong")
    assert "refused the login (no user name given)" in problem(tls=_tls(certs))
    assert "its certificate is not trusted" in problem(
        **{**good, "tls": _tls(certs, ca_file=certs["other_ca"])}, password="s3cret"
    )
    no_cert = problem(tls={"ca_file": certs["ca_file"]}, username="press", password="s3cret")
    assert "TLS failure" in no_cert or "client certificate" in no_cert, no_cert
    assert "TLS cert_file" in problem(**{**good, "tls": _tls(certs, cert_file=tmp / "nope.pem")})
    assert "does it expect TLS" in problem(
        username="press", password="s3cret"
    ) or "closed the connection" in problem(username="press", password="s3cret")
    closed = free_port()
    refused = probe_broker(MqttPublisherConfig(port=closed, connect_timeout_s=2))
    assert (
        refused == f"cannot reach the MQTT broker at 127.0.0.1:{closed}: connection refused (is it running?)"
    )


def test_config_check_reaches_the_broker(secure_broker, tiny_detect_onnx: Path, synthetic_images: Path):
    broker, certs, tmp = secure_broker
    line = {
        "name": "press",
        "cameras": [{"name": "top", "source": {"type": "folder", "path": str(synthetic_images)}}],
        "model": {"path": str(tiny_detect_onnx)},
        "recipes": {"default": {}},
    }
    (tmp / "lines").mkdir()
    (tmp / "lines" / "press.yaml").write_text(yaml.safe_dump(line))
    mqtt = {
        "type": "mqtt",
        "port": broker.port,
        "username": "press",
        "password": "s3cret",
        "tls": {k: str(v) for k, v in _tls(certs).items()},
    }
    site = {
        "site": SITE,
        "lines": ["lines/press.yaml"],
        "journal": {"path": str(tmp / "j.sqlite")},
        "publishers": [mqtt],
    }
    site_file = tmp / "agent.yaml"
    site_file.write_text(yaml.safe_dump(site))
    ok = CliRunner().invoke(app, ["config", "check", str(site_file), "--no-models"])
    assert ok.exit_code == 0, ok.output
    assert "publishers: mqtt" in ok.output

    site["publishers"] = [{**mqtt, "password": "wrong"}]
    site_file.write_text(yaml.safe_dump(site))
    bad = CliRunner().invoke(app, ["config", "check", str(site_file), "--no-models"])
    assert bad.exit_code == 1
    assert (
        f"mqtt publisher 'mqtt': the MQTT broker at 127.0.0.1:{broker.port} refused the login for user "
        "'press'" in bad.output
    )
    offline = CliRunner().invoke(app, ["config", "check", str(site_file), "--no-models", "--no-connect"])
    assert offline.exit_code == 0, offline.output
