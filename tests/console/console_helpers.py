"""Helpers of the console tests: a demo site (the real demo line, model and images) in a temp folder,
an agent running it (in this process or as `edge-inspect run`), and waiting."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from contract.result import Defect, FrameInfo, InspectionResult, ModelInfo

REPO = Path(__file__).resolve().parents[2]


def demo_site(
    root: Path,
    *,
    console: dict[str, Any] | None = None,
    max_fps: float = 5,
    ok_sample_rate: float = 1.0,
    metrics: bool = False,
    capture: dict[str, Any] | None = None,
) -> Path:
    """agent.yaml + lines/demo.yaml under `root`: the demo line as shipped (comments kept), absolute
    paths to the repo's images and model, console on a free port without login unless `console` says."""
    lines = root / "lines"
    lines.mkdir(parents=True, exist_ok=True)
    text = (REPO / "configs" / "lines" / "demo.yaml").read_text()
    text = text.replace("../../images", str(REPO / "images")).replace("../../models", str(REPO / "models"))
    text = text.replace("max_fps: 5 ", f"max_fps: {max_fps} ")
    text = text.replace("providers: auto", "providers: cpu\n  threads: 1")
    (lines / "demo.yaml").write_text(text)
    site = {
        "site": "test-site",
        "lines": ["lines/demo.yaml"],
        "journal": {"path": "data/journal.sqlite"},
        "archive": {"path": "data/archive", "ok_sample_rate": ok_sample_rate, "min_free_mb": 0},
        "metrics": {"enabled": metrics, "host": "127.0.0.1", "port": 0},
        "reload": {"enabled": True, "poll_s": 0.3},
        "console": {"enabled": True, "host": "127.0.0.1", "port": 0, "auth": "none", **(console or {})},
    }
    if capture is not None:
        site["capture"] = {"path": "data/capture", "min_free_mb": 0, **capture}
    (root / "agent.yaml").write_text(yaml.safe_dump(site, sort_keys=False))
    return root / "agent.yaml"


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)


class AgentProcess:
    """`edge-inspect run -c SITE` in a subprocess; `url` is the console's, read from its start-up lines."""

    def __init__(self, site_file: Path) -> None:
        self.site_file = site_file
        self.log = site_file.parent / "agent.log"
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        self._log_handle = open(self.log, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "-c", str(site_file), "-q"],
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=site_file.parent,
        )
        self.url = wait_until(self._console_url, timeout=60, interval=0.1)

    def _console_url(self) -> str | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the agent exited ({self.proc.returncode}):\n{self.log.read_text()}")
        m = re.search(r"console: (http://127\.0\.0\.1:\d+)/", self.log.read_text())
        return m.group(1) if m else None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log_handle.close()
        return self.proc.returncode


CLASS_IDS = {"scratch": 0, "pit": 1, "crack": 2, "stain": 3}  # the demo model's


def result(line: str, verdict: str, classes: list[str], ts: datetime) -> InspectionResult:
    return InspectionResult(
        site="s",
        line=line,
        part_id="p",
        recipe="r",
        verdict=verdict,
        reasons=[f"{c}: 1 found" for c in classes],
        defects=[
            Defect(
                camera="top",
                class_name=c,
                class_id=CLASS_IDS[c],
                confidence=0.9,
                xyxy=[1, 1, 5, 5],
                area_px=16,
            )
            for c in classes
        ],
        frames=[FrameInfo(camera="top", width=64, height=48)],
        model=ModelInfo(name="m", version="1"),
        timestamp=ts,
    )


def add_line(
    site_file: Path, name: str, folder: Path, mode: str = "loop", max_fps: float | None = None
) -> Path:
    """Another copy of the demo line in the site of `demo_site`, named `name`, reading `folder` (which
    may not exist: its camera is then lost and retried) in folder-source `mode` (loop, once, watch)."""
    root = site_file.parent
    text = (root / "lines" / "demo.yaml").read_text()
    text = text.replace("name: demo", f"name: {name}", 1).replace(
        f"path: {REPO / 'images'}", f"path: {folder}"
    )
    text = text.replace("mode: loop", f"mode: {mode}")
    if max_fps is not None:
        text = re.sub(r"max_fps: [0-9.]+ ", f"max_fps: {max_fps} ", text)
    (root / "lines" / f"{name}.yaml").write_text(text)
    site = yaml.safe_load(site_file.read_text())
    site["lines"].append(f"lines/{name}.yaml")
    site_file.write_text(yaml.safe_dump(site, sort_keys=False))
    return root / "lines" / f"{name}.yaml"
