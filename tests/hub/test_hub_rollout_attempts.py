"""A rollout that cannot be fooled, with a real hub and real agents (in-process, and as a process killed
with -9 and restarted): the canary gate counts only the parts since *this* rollout applied; re-publishing
repairs a damaged copy on the hub and is a new attempt for an agent that refused the file before; a local
copy changed on disk is refused at restart, deleted with its folder, and the hub's history says why; a
refusal names its cause (an edited manifest, a foreign key)."""

from __future__ import annotations

import json
import time

import pytest
from hub_support import start_agent as start_agent_process
from hub_support import stop, wait_for
from test_hub_rollout import SITE, _events, _variant, flip_byte, setup  # noqa: F401 - `setup` is the fixture

from contract.model_signing import file_sha256
from hub.registry import Registry
from hub.rollout import RolloutError, Rollouts

PRESS, WELD = f"{SITE}/press", f"{SITE}/weld"


def _parts_on(server, sha: str) -> int:
    return int(
        server.web_store.db.scalar(
            "SELECT COUNT(*) FROM results WHERE site = ? AND line = 'press' AND model_sha256 = ?", (SITE, sha)
        )
    )


def test_a_new_rollout_is_a_new_attempt_and_the_canary_counts_only_its_own_parts(setup, tiny_detect_onnx):  # noqa: F811
    server, keys, start_agent, tmp = setup
    rollouts = Rollouts(server.web_store.db, server.config.data_dir)
    v2 = _variant(tiny_detect_onnx, tmp / "v2" / "model.onnx", "v2")
    sha = file_sha256(v2)
    card = {"name": "tiny", "version": "v2"}

    # A. the hub's copy is damaged after publishing: the agent refuses it, once, and keeps no folder
    r1 = rollouts.publish(v2, card, [PRESS], keys.private_file)
    stored = server.config.data_dir / "models" / f"{sha}.onnx"
    flip_byte(stored)
    agent = start_agent()
    wait_for(lambda: "failed" in _events(rollouts, "press"), what="the damaged copy's refusal")
    assert rollouts.line_status(r1)[PRESS]["status"] == "failed"
    assert not (tmp / "site" / "data" / "hub-models" / "press").exists()
    beats = agent.hub_link.heartbeats
    wait_for(lambda: agent.hub_link.heartbeats >= beats + 4, what="more heartbeats")
    assert _events(rollouts, "press").count("failed") == 1  # the same rollout is not tried again

    # B. publishing the same file again repairs the hub's copy, and the new rollout is a new attempt
    r2 = rollouts.publish(v2, card, [PRESS], keys.private_file)
    assert file_sha256(stored) == sha
    wait_for(lambda: rollouts.line_status(r2)[PRESS]["status"] == "applied", what="v2 applied under r2")
    assert agent.lines["press"].model_version == "v2"
    wait_for(lambda: _parts_on(server, sha) >= 100, what="100 parts on v2 in the hub")

    # C. the same file again, now with a canary: already running, so applied at once without a reload;
    # its gate counts the parts since r3 applied, not the 100+ the file inspected under r2
    r3 = rollouts.publish(v2, card, [PRESS, WELD], keys.private_file, canary=PRESS)
    wait_for(lambda: rollouts.line_status(r3)[PRESS]["status"] == "applied", what="r3 applied on the canary")
    assert rollouts.line_status(r3)[WELD]["status"] == "waiting"
    with pytest.raises(RolloutError, match="parts on the new model"):
        rollouts.promote(r3, min_parts=100)
    numbers = rollouts.canary_numbers(r3)
    assert numbers["parts"] < 100 <= _parts_on(server, sha)
    wait_for(lambda: rollouts.canary_numbers(r3)["parts"] >= 10, what="10 canary parts under r3")
    assert rollouts.promote(r3, min_parts=10) == [WELD]
    wait_for(
        lambda: rollouts.line_status(r3)[WELD]["status"] == "applied", what="weld applied after promotion"
    )
    assert rollouts.line_status(r2)[PRESS]["status"] == "replaced"


def test_a_copy_changed_on_disk_is_refused_at_restart_deleted_and_reported(setup, tiny_detect_onnx):  # noqa: F811
    server, keys, _, tmp = setup
    rollouts = Rollouts(server.web_store.db, server.config.data_dir)
    site_file = tmp / "site" / "agent.yaml"
    pulled = tmp / "site" / "data" / "hub-models"
    v2 = _variant(tiny_detect_onnx, tmp / "v2" / "model.onnx", "v2")
    r1 = rollouts.publish(v2, {"name": "tiny", "version": "v2"}, [PRESS], keys.private_file)
    # an edited manifest (the hub's database changed after signing) for the other line
    v5 = _variant(tiny_detect_onnx, tmp / "v5" / "model.onnx", "v5")
    r5 = rollouts.publish(v5, {"name": "tiny", "version": "v5"}, [WELD], keys.private_file)
    manifest = rollouts.get(r5)["manifest"]
    manifest["card"]["version"] = "v5-edited"
    server.web_store.db.execute("UPDATE rollouts SET manifest = ? WHERE id = ?", (json.dumps(manifest), r5))

    proc = start_agent_process(site_file)
    try:
        wait_for(lambda: rollouts.line_status(r1)[PRESS]["status"] == "applied", what="v2 applied on press")
        wait_for(lambda: "failed" in _events(rollouts, "weld"), what="the edited manifest's refusal")
        error = rollouts.history(SITE, "weld")[-1]["detail"]["error"]
        assert "changed after it was signed" in error and "ml-team" in error
        local = next((pulled / "press").rglob("*.onnx"))
        proc.kill()  # kill -9: no clean stop
        proc.wait(10)
        flip_byte(local, -50)

        proc = start_agent_process(site_file)
        wait_for(lambda: rollouts.line_status(r1)[PRESS]["status"] == "failed", what="the refusal in history")
        error = rollouts.history(SITE, "press")[-1]["detail"]["error"]
        assert "refused at start" in error and "deleted" in error and "sha256" in error
        assert not local.exists() and not local.parent.exists()  # the file and its folder are gone
        assert "press" not in json.loads((pulled / "state.json").read_text())
        registry = Registry(server.web_store.db)
        wait_for(
            lambda: (registry.line(SITE, "press") or {}).get("hub_model_status") == "failed",
            what="the registry to show the refusal",
        )
        assert registry.line(SITE, "press")["model_sha256"] != file_sha256(v2)

        # not tried again for that rollout, even across heartbeats; a new rollout is a new attempt
        time.sleep(1.5)
        assert _events(rollouts, "press").count("failed") == 1
        r6 = rollouts.publish(v2, {"name": "tiny", "version": "v2"}, [PRESS], keys.private_file)
        wait_for(lambda: rollouts.line_status(r6)[PRESS]["status"] == "applied", what="v2 applied again (r6)")
        assert file_sha256(next((pulled / "press").rglob("*.onnx"))) == file_sha256(v2)
    finally:
        stop(proc)
