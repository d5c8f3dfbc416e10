"""The `type: mqtt` publisher's configuration: the shipped example loads, mistakes name file, line and key,
and names that cannot be MQTT topic levels are refused before anything connects."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from contract.yamlconf import ConfigError
from edge_agent.config import load_agent_config
from edge_agent.journal import ResultJournal
from edge_agent.publishers.base import PublisherContext
from edge_agent.publishers.mqtt_pub import MqttPublisher, MqttPublisherConfig
from edge_agent.publishers.registry import resolve_publisher

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_example_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGE_INSPECT_DATA", str(tmp_path))
    cfg = load_agent_config(REPO / "configs" / "agent-mqtt.yaml")
    (entry,) = cfg.publishers
    assert entry.type == "mqtt" and resolve_publisher("mqtt")[0] is MqttPublisherConfig
    assert entry.config.sparkplug.group_id == "edge-inspect" and entry.config.broker_port() == 1883


def test_mistakes_name_file_line_and_key(tmp_path: Path) -> None:
    site = tmp_path / "agent.yaml"
    site.write_text(
        yaml.safe_dump(
            {
                "site": "plant-a",
                "lines": [],
                "journal": {"path": "j.sqlite"},
                "publishers": [{"type": "mqtt", "topic_prefix": "plant/#", "sparkplug": {"group": "x"}}],
            }
        )
    )
    with pytest.raises(ConfigError) as info:
        load_agent_config(site)
    text = str(info.value)
    assert "topic_prefix" in text and "no wildcards" in text
    assert "sparkplug.group" in text and "unknown key" in text
    assert str(site) in text


def test_names_that_cannot_be_topic_levels_are_refused(tmp_path: Path) -> None:
    journal = ResultJournal(tmp_path / "j.sqlite")
    try:
        with pytest.raises(ValueError, match="site name 'plant/a' cannot be an MQTT topic level"):
            MqttPublisher(
                MqttPublisherConfig(), PublisherContext(site="plant/a", boot_id="b", journal=journal)
            )
        context = PublisherContext(
            site="plant-a", boot_id=uuid.uuid4().hex, journal=journal, lines={"a+b": None}
        )
        with pytest.raises(ValueError, match="line name 'a\\+b'"):
            MqttPublisher(MqttPublisherConfig(), context)
        with pytest.raises(ValueError, match="nothing to publish"):
            MqttPublisher(
                MqttPublisherConfig(plain=False, sparkplug={"enabled": False}),
                PublisherContext(site="plant-a", boot_id="b", journal=journal),
            )
        with pytest.raises(ValueError, match="one topic level"):
            MqttPublisherConfig(sparkplug={"group_id": "a/b"})
    finally:
        journal.close()
