"""kill -9 of the real daemon (`edge-inspect run`: folder camera → real ONNX model → journal → publishers),
restart, and the MES receiver ends with every journaled result exactly once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from zmq_support import free_port, wait_for

from contract.zmq_security import ServerSecurity
from edge_agent.journal import ResultJournal
from mes.receiver import MesReceiver

REPO = Path(__file__).resolve().parents[2]
PARTS_PER_RUN = 240


def _site(root: Path, images: Path, model: Path, mes_endpoint: str) -> Path:
    line = {
        "name": "press",
        "cameras": [{"name": "top", "source": {"type": "folder", "path": str(images), "mode": "once"}}],
        "trigger": {"type": "free_run", "max_fps": 80},  # a cap, so the kill lands mid-stream anywhere
        "model": {"path": str(model), "conf": 0.01, "threads": 1},
        "recipes": {"default": {"min_confidence": 0.01}},
    }
    site = {
        "site": "plant-a",
        "lines": ["lines/*.yaml"],
        "journal": {"path": "data/journal.sqlite"},
        "archive": {"path": "data/archive", "ok_sample_rate": 0.0},
        "metrics": {"enabled": False},
        "reload": {"enabled": False},
        "publishers": [
            {"type": "zmq", "pub_endpoint": "tcp://127.0.0.1:*", "router_endpoint": "tcp://127.0.0.1:*",
             "security": "plain"},
            {"type": "mes", "endpoint": mes_endpoint, "security": "plain", "window": 16,
             "resend_initial_s": 0.2, "resend_max_s": 1.0},
        ],
    }
    (root / "lines").mkdir(parents=True)
    (root / "lines" / "press.yaml").write_text(yaml.safe_dump(line))
    (root / "agent.yaml").write_text(yaml.safe_dump(site))
    return root / "agent.yaml"


def _run_agent(site_file: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(site_file), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )


def test_kill_9_edge_inspect_run_then_restart(tmp_path: Path, tiny_detect_onnx: Path, synthetic_images: Path):
    images = tmp_path / "images"
    images.mkdir()
    sources = sorted(synthetic_images.glob("*.png"))
    for i in range(PARTS_PER_RUN):  # one part per file; "once" = each run inspects them all again
        shutil.copy(sources[i % len(sources)], images / f"part_{i:04d}.png")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    site_file = _site(tmp_path / "site", images, tiny_detect_onnx, endpoint)
    journal_path = tmp_path / "site" / "data" / "journal.sqlite"

    receiver = MesReceiver(endpoint, tmp_path / "mes.sqlite", ServerSecurity(security="plain"))
    receiver.start()
    agents: list[subprocess.Popen] = []
    try:
        first = _run_agent(site_file)
        agents.append(first)
        wait_for(lambda: receiver.store.count() >= 20 or first.poll() is not None, timeout=120,
                 what="the first results at the MES")
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)

        journal = ResultJournal(journal_path)
        at_kill = journal.last_seq()
        assert 20 <= at_kill < PARTS_PER_RUN, "the kill must land in the middle of the stream"
        assert receiver.store.count() <= at_kill

        second = _run_agent(site_file)
        agents.append(second)
        total = at_kill + PARTS_PER_RUN
        wait_for(lambda: (journal.last_seq() == total and receiver.store.count() == total)
                 or second.poll() is not None, timeout=120, what="second run inspected and delivered")
        assert second.poll() is None, second.stderr.read() if second.stderr else ""
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0

        ids = [r.result_id for r in journal.iter_since(0)]
        assert len(ids) == total == receiver.store.count()
        assert sorted(receiver.store.result_ids()) == sorted(ids)
        journal.close()
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait(10)
        receiver.stop()
