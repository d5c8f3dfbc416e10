"""Helpers shared by the ZeroMQ tests (imported by name: a unique module name, unlike `conftest`)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from contract.result import Defect, FrameInfo, InspectionResult, ModelInfo

SITE = "plant-a"


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (for sockets that must re-bind the same port later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_result(line: str = "line-1", index: int = 0, verdict: str = "OK") -> InspectionResult:
    """A realistic result body: one NG part carries a defect, frames of two cameras."""
    defects = []
    if verdict == "NG":
        defects = [Defect(camera="top", class_name="scratch", class_id=0, confidence=0.91,
                          xyxy=[10.0, 12.0, 40.0, 30.0], area_px=540.0)]
    return InspectionResult(
        site=SITE, line=line, part_id=f"P-{index:06d}", recipe="default", verdict=verdict,
        reasons=["scratch > 0.5"] if verdict == "NG" else [], defects=defects,
        frames=[FrameInfo(camera=camera, width=640, height=480) for camera in ("top", "side")],
        model=ModelInfo(name="tiny", version="1"), timings_ms={"infer": 3.2, "total": 5.1},
    )


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll `condition` until true; fail with `what` (no timing assertion, only a hang guard)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


