"""Helpers of the hub tests: run `edge-inspect hub serve` and `edge-inspect run` as real processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start_hub(
    data: Path, store: str, ingest_port: int, http_port: int = 0, extra: list[str] | None = None
) -> subprocess.Popen:
    """`edge-inspect hub serve` in its own process (stderr to data/hub.log, appended across restarts)."""
    data.mkdir(parents=True, exist_ok=True)
    log = open(data / "hub.log", "a")  # noqa: SIM115 - the child process owns it
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "hub",
            "serve",
            "--data",
            str(data),
            "--store",
            store,
            "--ingest",
            f"tcp://127.0.0.1:{ingest_port}",
            "--http-port",
            str(http_port),
            "--plain",
            *(extra or []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
        cwd=REPO,
        env=_env(),
    )


def start_agent(site_file: Path) -> subprocess.Popen:
    log = open(site_file.parent / "agent.log", "a")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(site_file), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=log,
        cwd=REPO,
        env=_env(),
    )


def write_site(
    root: Path,
    images: Path,
    model: Path,
    hub_endpoint: str,
    *,
    site: str = "plant-a",
    line: str = "press",
    max_fps: float = 30,
    hub: dict | None = None,
    extra_line: dict | None = None,
    mode: str = "once",
    site_extra: dict | None = None,
) -> Path:
    """A site with one folder-camera line delivering to the hub (`type: mes`, plain, small window)."""
    line_cfg = {
        "name": line,
        "cameras": [{"name": "top", "source": {"type": "folder", "path": str(images), "mode": mode}}],
        "trigger": {"type": "free_run", "max_fps": max_fps},
        "model": {"path": str(model), "conf": 0.01, "threads": 1},
        "recipes": {"default": {"min_confidence": 0.01}},
        **(extra_line or {}),
    }
    site_cfg = {
        "site": site,
        "lines": ["lines/*.yaml"],
        "journal": {"path": "data/journal.sqlite"},
        "archive": {"path": "data/archive", "ok_sample_rate": 0.0},
        "metrics": {"enabled": False},
        "reload": {"enabled": False},
        "publishers": [
            {
                "type": "mes",
                "name": "hub",
                "endpoint": hub_endpoint,
                "security": "plain",
                "window": 16,
                "resend_initial_s": 0.2,
                "resend_max_s": 1.0,
            },
        ],
    }
    if hub is not None:
        site_cfg["hub"] = hub
    site_cfg.update(site_extra or {})
    (root / "lines").mkdir(parents=True, exist_ok=True)
    (root / "lines" / f"{line}.yaml").write_text(yaml.safe_dump(line_cfg))
    (root / "agent.yaml").write_text(yaml.safe_dump(site_cfg))
    return root / "agent.yaml"


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def hub_config(tmp: Path, store: str, **http):
    """A HubConfig for an in-process `HubServer` on free ports (plain results stream)."""
    from hub.config import HubConfig

    return HubConfig(
        store=store,
        data_dir=tmp / "hub-data",
        ingest={"endpoint": "tcp://127.0.0.1:*", "security": "plain"},
        http={"port": 0, **http},
        agents={"late_after_heartbeats": 3, "offline_after_s": 8},
    )


def provision(server, agent_id: str, company: str, token_file: Path) -> None:
    from hub.registry import Registry

    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(Registry(server.web_store.db).add_agent(agent_id, company) + "\n")


def rollout_site(
    server,
    tmp: Path,
    model: Path,
    sample_images: Path,
    public_key: Path,
    *,
    max_fps: float = 15,
    mode: str = "once",
    copies: int = 40,
    site: str = "acme-north",
) -> Path:
    """A provisioned agent `acme-pc1` (company Acme) with lines `press` and `weld` on `model` (with a
    reference image), trusting `public_key` for rollouts, heartbeat 0.3 s; returns its site file."""
    images = tmp / "images"
    images.mkdir()
    for i, src in enumerate(sorted(sample_images.glob("*.png")) * copies):
        shutil.copy(src, images / f"part_{i:04d}.png")
    root = tmp / "site"
    provision(server, "acme-pc1", "Acme", root / "hub.token")
    hub = {
        "url": server.http_url,
        "agent_id": "acme-pc1",
        "token_file": "hub.token",
        "heartbeat_s": 0.3,
        "trusted_keys": [str(public_key)],
    }
    reference = sorted(sample_images.glob("*.png"))[0]
    line_model = {"path": str(model), "conf": 0.01, "threads": 1, "reference_image": str(reference)}
    for line in ("press", "weld"):
        site_file = write_site(
            root,
            images,
            model,
            server.ingest.endpoint,
            site=site,
            line=line,
            max_fps=max_fps,
            mode=mode,
            hub=hub,
            extra_line={"model": line_model},
        )
    return site_file
