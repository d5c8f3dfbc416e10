"""The hub's CLI end to end on an SQLite store: provision an agent, make a signing key, publish with a
canary, list, refuse a promotion without numbers, roll back, read the history; a user for the dashboard."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hub_support import REPO

from hub.auth import Users
from hub.store import HubStore


def _cli(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "hub", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        input=input,
        timeout=120,
    )


def test_cli_provision_publish_rollback_history(tmp_path: Path, tiny_detect_onnx: Path):
    data = tmp_path / "hub"
    common = ["--data", str(data)]
    token_file = tmp_path / "acme.token"
    r = _cli("agent", "add", "acme-pc1", "--company", "Acme", "--token-out", str(token_file), *common)
    assert r.returncode == 0, r.stderr
    assert len(token_file.read_text().strip()) > 30 and oct(token_file.stat().st_mode)[-3:] == "600"
    again = _cli("agent", "add", "acme-pc1", "--company", "Acme", *common)
    assert again.returncode == 1 and "exists already" in again.stderr

    assert _cli("keys", "ml", "--out", str(tmp_path / "keys")).returncode == 0
    r = _cli(
        "publish",
        str(tiny_detect_onnx),
        "--line",
        "acme-north/press",
        "--line",
        "acme-north/weld",
        "--canary",
        "acme-north/press",
        "--signing-key",
        str(tmp_path / "keys" / "ml.ed25519"),
        *common,
    )
    assert r.returncode == 0, r.stderr
    assert "rollout 1: canary acme-north/press first" in r.stdout
    listed = _cli("rollout", "list", *common)
    assert "canary" in listed.stdout and "acme-north/weld" in listed.stdout
    refused = _cli("rollout", "promote", "1", *common)
    assert refused.returncode == 1 and "has not applied the model yet" in refused.stderr
    back = _cli("rollout", "rollback", "1", *common)
    assert back.returncode == 0 and "acme-north/press: back to its own model" in back.stdout
    history = _cli("history", "acme-north/press", *common).stdout
    assert "assigned (canary)" in history and "rolled back" in history
    bad_target = _cli(
        "publish",
        str(tiny_detect_onnx),
        "--line",
        "no-slash",
        "--signing-key",
        str(tmp_path / "keys" / "ml.ed25519"),
        *common,
    )
    assert bad_target.returncode == 1 and "must be SITE/LINE" in bad_target.stderr

    r = _cli("user", "ana", "--role", "ml", *common, input="a-long-password\na-long-password\n")
    assert r.returncode == 0, r.stderr
    store = HubStore.open(f"sqlite:///{data / 'hub.sqlite'}")
    assert Users(store.db).check("ana", "a-long-password") == "ml"
    store.close()
