"""A camera that dies mid-run is retried while another line keeps producing; hot reload keeps the old
model when the new one is corrupt; SIGTERM leaves a consistent journal; no torch on the run path."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import yaml
from agent_helpers import folder_line, wait_until, write_site, write_yaml

from contract.result import InspectionResult

REPO = Path(__file__).resolve().parents[2]


def write_video(path: Path, frames: int = 5) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (128, 96))
    rng = np.random.default_rng(1)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    writer.release()


def test_lost_camera_is_retried_while_another_line_keeps_producing(
    tmp_path, tiny_detect_onnx, synthetic_images, agent_factory
):
    device = tmp_path / "dev" / "camera0.avi"  # OpenCV opens a file path like a device path
    device.parent.mkdir()
    write_video(device)
    flaky = folder_line(
        "flaky",
        tmp_path,
        tiny_detect_onnx,
        cameras=[
            {
                "name": "cam",
                "source": {"type": "camera", "device": str(device)},
                "reconnect_initial_s": 0.05,
                "reconnect_max_s": 0.2,
            }
        ],
        trigger={"type": "free_run", "max_fps": 50},
    )
    steady = folder_line(
        "steady", synthetic_images, tiny_detect_onnx, trigger={"type": "free_run", "max_fps": 50}
    )
    steady["cameras"][0]["source"]["mode"] = "loop"
    states: list[str] = []
    agent = agent_factory(
        write_site(tmp_path, [flaky, steady]),
        on_event=lambda line, event, payload: states.append(payload["state"]) if line == "flaky" else None,
    )
    agent.start()
    flaky_rt, steady_rt = agent.lines["flaky"], agent.lines["steady"]
    wait_until(lambda: flaky_rt.counts["inspected"] >= 3)

    # the device disappears: every re-open fails, the line is degraded, the other line goes on
    device.unlink()
    wait_until(lambda: flaky_rt.status()["cameras"][0]["state"] == "reconnecting")
    failures_before = flaky_rt.status()["cameras"][0]["failures"]
    steady_before, flaky_before = steady_rt.counts["inspected"], flaky_rt.counts["inspected"]
    wait_until(lambda: flaky_rt.status()["cameras"][0]["failures"] >= failures_before + 3)  # retried
    wait_until(lambda: steady_rt.counts["inspected"] >= steady_before + 10)
    assert flaky_rt.state == "degraded" and steady_rt.state == "running"
    # at most the frame in inference and the one the reader had already handed over (a video file is
    # read ahead by one frame) are inspected after the loss
    assert flaky_rt.counts["inspected"] <= flaky_before + 2
    cam = flaky_rt.status()["cameras"][0]
    assert "cannot open" in cam["last_error"] and cam["retry_in_s"] <= 0.2  # back-off is capped
    assert "degraded" in states

    # the device comes back: reconnected, producing again
    write_video(device)
    wait_until(lambda: flaky_rt.counts["inspected"] >= flaky_before + 3)
    assert flaky_rt.status()["cameras"][0]["reconnects"] >= 1
    assert steady_rt.status()["cameras"][0]["reconnects"] == 0


def test_hot_reload_validates_and_keeps_the_old_model_on_failure(
    tmp_path, tiny_detect_onnx, synthetic_images, agent_factory
):
    model = tmp_path / "models" / "model.onnx"
    model.parent.mkdir()
    shutil.copy(tiny_detect_onnx, model)
    line = folder_line("l1", synthetic_images, model, trigger={"type": "free_run", "max_fps": 40})
    line["cameras"][0]["source"]["mode"] = "loop"
    site = write_site(tmp_path, [line], reload={"enabled": True, "poll_s": 0.05})
    events: list[tuple[str, dict]] = []
    agent = agent_factory(site, on_event=lambda ln, event, payload: events.append((event, payload)))
    agent.start()
    runtime = agent.lines["l1"]
    version = runtime.model_version
    wait_until(lambda: runtime.counts["inspected"] >= 2)

    # 1. a corrupt model file: rejected, the old model keeps inspecting
    model.write_bytes(b"this is not an onnx model" * 100)
    wait_until(lambda: any(e == "reload_failed" for e, _ in events))
    assert "not a loadable ONNX model" in runtime.status()["last_reload"]["error"]
    before = runtime.counts["inspected"]
    wait_until(lambda: runtime.counts["inspected"] >= before + 5)
    assert runtime.state == "running" and runtime.model_version == version

    # 2. a line file with a typo: rejected with file, line and key; still running
    line_file = tmp_path / "lines" / "l1.yaml"
    broken = yaml.safe_load(line_file.read_text())
    broken["trigger"]["max_fsp"] = 5
    write_yaml(line_file, broken)
    wait_until(lambda: sum(e == "reload_failed" for e, _ in events) >= 2)
    error = agent.reload_log[-1]["error"]
    assert f"{line_file}:" in error and "trigger.max_fsp: unknown key (did you mean 'max_fps'?)" in error

    # 3. a good model and a new recipe: validated, then swapped in
    shutil.copy(tiny_detect_onnx, model)
    line["recipes"]["night-shift"] = {"min_confidence": 0.5}
    write_yaml(line_file, line)
    wait_until(lambda: any(e == "reloaded" for e, _ in events))
    assert runtime.recipes == ["default", "night-shift"] and runtime.status()["last_reload"]["ok"]
    runtime.set_recipe("night-shift")
    seq = agent.journal.last_seq()
    wait_until(lambda: any(r.recipe == "night-shift" for r in agent.journal.since(seq)))


def _journal_rows(path: Path) -> list[tuple[int, str]]:
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return db.execute("SELECT seq, body FROM results ORDER BY seq").fetchall()
    finally:
        db.close()


def _count(path: Path) -> int:
    """Rows so far, read by another process while the agent writes (0 before the schema exists)."""
    if not path.exists():
        return 0
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def _signal_a_looping_agent(
    tmp_path: Path, model: Path, images: Path, after_results: int, signals: Sequence[int]
) -> tuple[subprocess.Popen, str, Path, Path]:
    """Run `edge-inspect run` on a looping folder line, send `signals` once `after_results` are journaled.

    Returns the finished process, its output, the site file and the journal path.
    """
    line = folder_line("l1", images, model)
    line["cameras"][0]["source"]["mode"] = "loop"
    site = write_site(tmp_path, [line])
    journal = tmp_path / "data" / "journal.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(site), "--quiet"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: _count(journal) >= after_results, timeout=60)
        for sig in signals:
            proc.send_signal(sig)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc, output, site, journal


def test_sigterm_stops_cleanly_and_leaves_a_consistent_journal(tmp_path, tiny_detect_onnx, synthetic_images):
    proc, output, site, journal = _signal_a_looping_agent(
        tmp_path, tiny_detect_onnx, synthetic_images, 20, [signal.SIGTERM]
    )
    assert proc.returncode == 0, output
    assert "stopped cleanly" in output
    rows = _journal_rows(journal)
    seqs = [seq for seq, _ in rows]
    assert seqs == list(range(1, len(rows) + 1))  # no gap, no duplicate
    bodies = [InspectionResult.from_json(body) for _, body in rows]
    assert [b.seq for b in bodies] == seqs  # every body was completed in its own transaction
    assert f"at seq {len(rows)}" in output
    # restart: the sequence goes on from where it was
    proc2 = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(site), "--quiet", "--for", "1.5"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc2.returncode == 0, proc2.stdout + proc2.stderr
    rows2 = _journal_rows(journal)
    assert [s for s, _ in rows2] == list(range(1, len(rows2) + 1)) and len(rows2) > len(rows)


def test_a_burst_of_signals_still_stops_cleanly(tmp_path, tiny_detect_onnx, synthetic_images):
    """`timeout`, make and systemd may each deliver a SIGTERM: several at once must not deadlock."""
    burst = (signal.SIGTERM, signal.SIGINT, signal.SIGTERM, signal.SIGTERM, signal.SIGINT) * 20
    proc, output, _site, journal = _signal_a_looping_agent(
        tmp_path, tiny_detect_onnx, synthetic_images, 5, burst
    )
    assert proc.returncode == 0, output
    assert "stopped cleanly" in output
    seqs = [seq for seq, _ in _journal_rows(journal)]
    assert seqs == list(range(1, len(seqs) + 1))


def test_run_path_never_imports_torch(tmp_path, tiny_detect_onnx, synthetic_images):
    site = write_site(tmp_path, [folder_line("l1", synthetic_images, tiny_detect_onnx)])
    code = (
        "import sys, time\n"
        "from edge_agent.cli import app\n"
        "from edge_agent.agent import Agent\n"
        "from edge_agent.config import load_agent_config\n"
        f"agent = Agent(load_agent_config({str(site)!r}))\n"
        "t0 = time.monotonic(); agent.start()\n"
        "while agent.journal.last_seq() < 1: time.sleep(0.01)\n"
        "agent.stop()\n"
        "roots = ('torch', 'ultralytics', 'torchvision')\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in roots)\n"
        "print('HEAVY', heavy)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


def test_line_whose_model_was_missing_recovers_when_it_appears(
    tmp_path, tiny_detect_onnx, synthetic_images, agent_factory
):
    model = tmp_path / "models" / "model.onnx"  # not there yet (a model still being copied to the PC)
    line = folder_line("late", synthetic_images, model)
    other = folder_line("other", synthetic_images, tiny_detect_onnx)
    site = write_site(
        tmp_path, [line, other], reload={"enabled": True, "poll_s": 0.05}, on_line_load_failure="run_others"
    )
    agent = agent_factory(site)
    agent.start()
    late = agent.lines["late"]
    assert late.state == "error" and "no such model file" in late.status()["last_error"]
    wait_until(lambda: agent.lines["other"].counts["inspected"] == 6)  # the other line is unaffected
    model.parent.mkdir()
    shutil.copy(tiny_detect_onnx, model)
    wait_until(lambda: late.counts["inspected"] == 6)
    assert late.status()["last_reload"]["ok"] and late.status()["last_error"] is None
