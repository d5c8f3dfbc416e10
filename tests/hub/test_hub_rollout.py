"""Signed model rollout with a real agent and a real hub: canary, promotion, one-command rollback, the
history per line; a tampered file, a foreign signature and a model that fails validation are refused
(the line keeps its model and the hub is told why); a local copy changed on disk is refused at start."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from hub_support import hub_config, rollout_site, wait_for

from contract.model_signing import file_sha256, generate_signing_key
from edge_agent.agent import Agent
from edge_agent.config import load_agent_config
from hub.registry import Registry
from hub.rollout import RolloutError, Rollouts
from hub.server import HubServer

SITE = "acme-north"


def _variant(src: Path, dest: Path, version: str) -> Path:
    """The same weights with another version in the metadata: another file, another sha256."""
    model = onnx.load(str(src))
    props = {p.key: p for p in model.metadata_props}
    if "model_version" in props:
        props["model_version"].value = version
    else:
        model.metadata_props.add(key="model_version", value=version)
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dest))
    return dest


def flip_byte(path: Path, offset: int = -64) -> None:
    """Damage a file the way a bad disk or a hand edit would: one byte changed, same size."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def setup(tmp_path: Path, store_url: str, tiny_detect_onnx: Path, synthetic_images: Path):
    server = HubServer(hub_config(tmp_path, store_url))
    server.start()
    keys = generate_signing_key(tmp_path / "keys", "ml-team")
    site_file = rollout_site(server, tmp_path, tiny_detect_onnx, synthetic_images, keys.public_file)
    agents: list[Agent] = []

    def start_agent() -> Agent:
        agent = Agent(load_agent_config(site_file))
        agent.start()
        agents.append(agent)
        return agent

    yield server, keys, start_agent, tmp_path
    for agent in agents:
        agent.stop()
    server.stop()


def _events(rollouts: Rollouts, line: str) -> list[str]:
    return [h["event"] for h in rollouts.history(SITE, line)]


def test_canary_promote_rollback_and_history(setup, tiny_detect_onnx: Path):
    server, keys, start_agent, tmp = setup
    rollouts = Rollouts(server.web_store.db, server.config.data_dir)
    agent = start_agent()
    own_version = agent.lines["press"].model_version
    wait_for(lambda: agent.hub_link.registered, what="registration")
    v2 = _variant(tiny_detect_onnx, tmp / "v2" / "model.onnx", "v2")
    rid = rollouts.publish(
        v2,
        {"name": "tiny", "version": "v2"},
        [f"{SITE}/press", f"{SITE}/weld"],
        keys.private_file,
        canary=f"{SITE}/press",
    )

    wait_for(lambda: "applied" in _events(rollouts, "press"), what="the canary to apply v2")
    assert agent.lines["press"].model_version == "v2"
    assert agent.lines["weld"].model_version == own_version  # only the canary so far
    with pytest.raises(RolloutError, match="parts on the new model"):
        rollouts.promote(rid, min_parts=10_000)  # not enough numbers yet: refused
    wait_for(lambda: rollouts.canary_numbers(rid)["parts"] >= 10, what="canary parts on v2 in the hub")
    assert rollouts.promote(rid, min_parts=10) == [f"{SITE}/weld"]
    wait_for(lambda: agent.lines["weld"].model_version == "v2", what="weld on v2 after promotion")
    wait_for(lambda: "applied" in _events(rollouts, "weld"), what="weld's report")
    line_row = {ln["line"]: ln for ln in Registry(server.web_store.db).lines()}
    wait_for(
        lambda: (
            {ln["line"]: ln for ln in Registry(server.web_store.db).lines()}["weld"]["model_sha256"]
            == file_sha256(v2)
        ),
        what="the registry to show v2 on weld",
    )
    assert line_row["press"]["model_version"] == "v2"

    back = rollouts.rollback(rid)  # one command, every line of the rollout
    assert sorted(back) == [(f"{SITE}/press", None), (f"{SITE}/weld", None)]
    wait_for(
        lambda: (
            agent.lines["press"].model_version == own_version
            and agent.lines["weld"].model_version == own_version
        ),
        what="both lines back on their own model",
    )
    wait_for(lambda: "reverted" in _events(rollouts, "weld"), what="the revert report")
    rolled_back = "rolled back (to the line's own model)"
    assert _events(rollouts, "press") == ["assigned (canary)", "applied", rolled_back, "reverted"]
    assert _events(rollouts, "weld") == ["assigned (promoted)", "applied", rolled_back, "reverted"]


def test_tampered_foreign_and_broken_models_never_run(setup, tiny_detect_onnx: Path, tmp_path: Path):
    server, keys, start_agent, tmp = setup
    rollouts = Rollouts(server.web_store.db, server.config.data_dir)

    # 1. the file on the hub was changed after it was published: its sha256 is not the signed one
    v3 = _variant(tiny_detect_onnx, tmp / "v3" / "model.onnx", "v3")
    r3 = rollouts.publish(v3, {"name": "tiny", "version": "v3"}, [f"{SITE}/press"], keys.private_file)
    stored = server.config.data_dir / "models" / f"{file_sha256(v3)}.onnx"
    flip_byte(stored, -100)
    agent = start_agent()
    wait_for(lambda: "failed" in _events(rollouts, "press"), what="the tampered model's refusal")
    own_version = agent.lines["press"].model_version
    error = rollouts.history(SITE, "press")[-1]["detail"]["error"]
    assert "sha256" in error and "is not the signed" in error
    assert own_version != "v3" and agent.lines["press"].state == "running"
    pulled = tmp / "site" / "data" / "hub-models"
    assert not list(pulled.rglob("*.onnx"))  # not kept on the agent
    assert not (pulled / "press").exists()  # nor the folder it was downloaded into
    rollouts.rollback(r3)

    # 2. signed by a key the agent does not trust
    stranger = generate_signing_key(tmp / "keys", "stranger")
    v4 = _variant(tiny_detect_onnx, tmp / "v4" / "model.onnx", "v4")
    r4 = rollouts.publish(v4, {"name": "tiny", "version": "v4"}, [f"{SITE}/press"], stranger.private_file)
    wait_for(lambda: _events(rollouts, "press").count("failed") == 2, what="the foreign signature's refusal")
    error = rollouts.history(SITE, "press")[-1]["detail"]["error"]
    assert "signed with key stranger" in error and "not one of this agent's trusted keys" in error
    assert agent.lines["press"].model_version == own_version
    rollouts.rollback(r4)

    # 3. properly signed, but not a working model: the reference-image validation refuses it
    broken = tmp / "broken" / "model.onnx"
    broken.parent.mkdir()
    broken.write_bytes(b"not an onnx model at all" * 100)
    rollouts.publish(broken, {"name": "broken", "version": "x"}, [f"{SITE}/press"], keys.private_file)
    wait_for(lambda: _events(rollouts, "press").count("failed") == 3, what="the broken model's refusal")
    assert agent.lines["press"].model_version == own_version and agent.lines["press"].state == "running"
    hub_model = agent.hub_link.line_state["press"]
    assert hub_model["status"] == "failed" and hub_model["error"]


def test_a_local_copy_changed_on_disk_is_refused_at_start(setup, tiny_detect_onnx: Path):
    server, keys, start_agent, tmp = setup
    rollouts = Rollouts(server.web_store.db, server.config.data_dir)
    agent = start_agent()
    own_version = agent.lines["press"].model_version
    v2 = _variant(tiny_detect_onnx, tmp / "v2" / "model.onnx", "v2")
    rollouts.publish(v2, {"name": "tiny", "version": "v2"}, [f"{SITE}/press"], keys.private_file)
    wait_for(lambda: agent.lines["press"].model_version == "v2", what="v2 applied")
    agent.stop()
    local = next((tmp / "site" / "data" / "hub-models" / "press").rglob("*.onnx"))
    flip_byte(local, -50)

    again = start_agent()
    assert again.lines["press"].model_version == own_version  # its own model, not the changed file
    assert again.hub_link.line_state["press"]["status"] == "failed"
    assert "sha256" in again.hub_link.line_state["press"]["error"]
