"""Registration and heartbeats: a real agent (folder camera, real ONNX model) registers with a real hub
over HTTP, heartbeats its lines' state and model; the hub sees it online, then late, then offline."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hub_support import hub_config, provision, wait_for, write_site

from edge_agent.agent import Agent
from edge_agent.config import load_agent_config
from hub.registry import Registry
from hub.server import HubServer


@pytest.fixture
def hub_server(tmp_path: Path, store_url: str):
    server = HubServer(hub_config(tmp_path, store_url))
    server.start()
    yield server
    server.stop()


def _images(tmp_path: Path, synthetic_images: Path, n: int = 30) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    sources = sorted(synthetic_images.glob("*.png"))
    for i in range(n):
        shutil.copy(sources[i % len(sources)], images / f"part_{i:04d}.png")
    return images


def test_agent_registers_heartbeats_and_goes_late_then_offline(
    tmp_path: Path, hub_server: HubServer, tiny_detect_onnx: Path, synthetic_images: Path
):
    provision(hub_server, "acme-pc1", "Acme Stamping", tmp_path / "site" / "hub.token")
    site_file = write_site(
        tmp_path / "site",
        _images(tmp_path, synthetic_images),
        tiny_detect_onnx,
        hub_server.ingest.endpoint,
        site="acme-north",
        max_fps=10,
        hub={
            "url": hub_server.http_url,
            "agent_id": "acme-pc1",
            "token_file": "hub.token",
            "heartbeat_s": 0.3,
        },
    )
    registry = Registry(hub_server.web_store.db, late_after_heartbeats=3, offline_after_s=8)
    agent = Agent(load_agent_config(site_file))
    agent.start()
    try:
        wait_for(
            lambda: (
                any(a["status"] == "online" for a in registry.agents())
                and registry.lines()
                and registry.lines()[0]["state"] == "running"
            ),
            timeout=60,
            what="the agent online with its line running",
        )
        a = registry.agents()[0]
        assert (a["agent_id"], a["company"], a["site"]) == ("acme-pc1", "Acme Stamping", "acme-north")
        assert a["version"] and a["boot_id"] == agent.boot_id
        line = registry.lines()[0]
        assert (line["site"], line["line"], line["company"]) == ("acme-north", "press", "Acme Stamping")
        assert line["model_sha256"] == agent.lines["press"].status()["model"]["sha256"]
        assert line["recipe"] == "default"
        beats = agent.hub_link.heartbeats
        wait_for(lambda: agent.hub_link.heartbeats >= beats + 3, timeout=30, what="more heartbeats")
        # the results go by the acknowledged stream to the same hub
        wait_for(lambda: hub_server.web_store.count() > 0, timeout=60, what="results in the hub")
        # a review on the line console reaches the hub with the next heartbeat, and marks the hub's row
        first = agent.journal.get(1)
        wait_for(
            lambda: (
                hub_server.web_store.db.scalar(
                    "SELECT COUNT(*) FROM results WHERE result_id = ?", (first.result_id,)
                )
                == 1
            ),
            what="result 1 in the hub",
        )
        agent.journal.add_review(
            1,
            "escape",
            [{"camera": "top", "class": "scratch", "class_id": 0, "xyxy": [1.0, 2.0, 20.0, 30.0]}],
            reviewer="qe",
        )
        wait_for(
            lambda: (
                hub_server.web_store.db.scalar(
                    "SELECT review FROM results WHERE result_id = ?", (first.result_id,)
                )
                == "escape"
            ),
            what="the review in the hub",
        )
        assert hub_server.web_store.db.scalar("SELECT COUNT(*) FROM review_events") == 1
    finally:
        agent.stop()
    wait_for(lambda: registry.agents()[0]["status"] == "late", timeout=10, what="the agent late")
    wait_for(lambda: registry.agents()[0]["status"] == "offline", timeout=20, what="the agent offline")


def test_wrong_token_is_refused_and_the_agent_says_so(
    tmp_path: Path, hub_server: HubServer, tiny_detect_onnx: Path, synthetic_images: Path
):
    provision(hub_server, "acme-pc1", "Acme", tmp_path / "real.token")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "hub.token").write_text("not-the-token\n")
    site_file = write_site(
        tmp_path / "site",
        _images(tmp_path, synthetic_images, 3),
        tiny_detect_onnx,
        hub_server.ingest.endpoint,
        hub={"url": hub_server.http_url, "token_file": "hub.token", "heartbeat_s": 0.3},
    )
    request = urllib.request.Request(
        hub_server.http_url + "/api/v1/heartbeat",
        data=b"{}",
        method="POST",
        headers={"Authorization": "Bearer not-the-token"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    agent = Agent(load_agent_config(site_file))
    agent.start()
    try:
        wait_for(lambda: agent.hub_link.last_error is not None, timeout=30, what="the agent's error")
        assert "401" in agent.hub_link.last_error and "token" in agent.hub_link.last_error
        assert agent.lines["press"].state in ("running", "stopped")  # inspection goes on
    finally:
        agent.stop()
    assert Registry(hub_server.web_store.db).agents()[0]["last_seen"] is None


def test_a_site_cannot_be_claimed_by_a_second_agent(tmp_path: Path, hub_server: HubServer):
    registry = Registry(hub_server.web_store.db)
    first, second = registry.add_agent("pc1", "Acme"), registry.add_agent("pc2", "Other")

    def beat(token: str) -> int:
        body = json.dumps({"site": "acme-north", "lines": {}}).encode()
        req = urllib.request.Request(
            hub_server.http_url + "/api/v1/register",
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {token}"},
        )
        try:
            return urllib.request.urlopen(req, timeout=10).status
        except urllib.error.HTTPError as exc:
            assert "already registered" in json.loads(exc.read())["error"]
            return exc.code

    assert beat(first) == 200
    assert beat(second) == 400
