"""Capture of uncertain / reviewed parts into their own archive, and `dataset from-archive` on it."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from agent_helpers import folder_line, wait_until, write_site
from typer.testing import CliRunner

from contract.result import Defect, FrameInfo, InspectionResult, ModelInfo
from edge_agent.archive import Archive
from edge_agent.capture import SIDECAR_SUFFIX, CaptureArchive, best_confidence
from edge_agent.cli import app
from edge_agent.config import ArchiveConfig, CaptureConfig
from edge_agent.outcome import Outcome
from edge_agent.sources.base import Frame
from vision.detections import Detections

NAMES = {0: "scratch", 1: "pit"}


def _outcome(seq: int, confidences: list[float], image: np.ndarray, verdict: str = "NG") -> Outcome:
    n = len(confidences)
    det = Detections(
        xyxy=np.array([[10 + 20 * i, 10, 30 + 20 * i, 30] for i in range(n)], dtype=np.float32).reshape(
            -1, 4
        ),
        confidence=np.array(confidences, dtype=np.float32),
        class_id=np.array([i % 2 for i in range(n)], dtype=np.int64),
        names=NAMES,
    )
    result = InspectionResult(
        seq=seq,
        site="s",
        line="l1",
        part_id=f"P{seq}",
        recipe="r",
        verdict=verdict,
        model=ModelInfo(name="m", version="3"),
    )
    return Outcome(
        result, {"top": Frame(image, "top", "x.png", seq)}, {"top": det}, {"top": np.ones(n, bool)}
    )


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (96, 128, 3), dtype=np.uint8)


def test_only_parts_in_the_band_are_captured_with_a_sidecar(tmp_path: Path, image: np.ndarray) -> None:
    capture = CaptureArchive(
        CaptureConfig(enabled=True, path=tmp_path / "cap", band=(0.3, 0.6), min_free_mb=0)
    )
    capture.start()
    assert not capture.submit(_outcome(1, [0.9, 0.2], image))  # sure: best 0.9
    assert not capture.submit(_outcome(2, [], image, "OK"))  # nothing found: best 0
    assert not capture.submit(_outcome(3, [0.6], image))  # the band's top is exclusive
    assert capture.submit(_outcome(4, [0.45, 0.1], image))  # unsure
    assert capture.submit(_outcome(5, [0.3], image, "OK"))
    capture.stop()
    sidecars = sorted((tmp_path / "cap").rglob(f"*{SIDECAR_SUFFIX}"))
    assert [p.name for p in sidecars] == ["0000000004_P4_NG.capture.json", "0000000005_P5_OK.capture.json"]
    meta = json.loads(sidecars[0].read_text())
    assert meta["reason"] == "uncertain" and meta["best_confidence"] == pytest.approx(0.45)
    assert meta["classes"] == ["scratch", "pit"] and meta["model"] == {"name": "m", "version": "3"}
    cam = meta["cameras"]["top"]
    assert (sidecars[0].parent / cam["file"]).is_file() and (cam["width"], cam["height"]) == (128, 96)
    assert [d["class"] for d in cam["detections"]] == ["scratch", "pit"]
    assert not list((tmp_path / "cap").rglob("*_annotated*"))  # raw pixels only, for labelling
    assert capture.counts["uncertain"] == 2


def test_capture_quota_deletes_oldest_images_and_their_sidecars(tmp_path: Path, image: np.ndarray) -> None:
    size = len(cv2.imencode(".png", image)[1])
    config = CaptureConfig(
        enabled=True, path=tmp_path / "cap", band=(0.0, 1.0), quota_mb=size * 3.5 / 1e6, min_free_mb=0
    )
    capture = CaptureArchive(config)
    capture.start()
    for seq in range(1, 9):
        assert capture.submit(_outcome(seq, [0.5], image))
    capture.stop()
    images = sorted(p.name for p in (tmp_path / "cap").rglob("*.png"))
    sidecars = sorted(p.name for p in (tmp_path / "cap").rglob(f"*{SIDECAR_SUFFIX}"))
    assert len(images) <= 4 and images[-1] == "0000000008_P8_NG_top.png"
    assert [s.split("_")[0] for s in sidecars] == [i.split("_")[0] for i in images]  # no orphan sidecars


def test_a_reviewed_part_is_captured_from_its_result(tmp_path: Path, image: np.ndarray) -> None:
    capture = CaptureArchive(CaptureConfig(enabled=True, path=tmp_path / "cap", min_free_mb=0))
    capture.start()
    result = InspectionResult(
        seq=7,
        site="s",
        line="l1",
        part_id="P7",
        recipe="r",
        verdict="OK",
        model=ModelInfo(name="m", version="3"),
        defects=[
            Defect(
                camera="top", **{"class": "pit"}, class_id=1, confidence=0.2, xyxy=[5, 6, 15, 16], area_px=100
            )
        ],
    )
    assert capture.submit_reviewed(result, {"top": image}, note="escape: pit missed")
    # from the console: the images come back from the NG archive
    archive = Archive(ArchiveConfig(path=tmp_path / "ng", format="png", min_free_mb=0, annotated=False))
    archive.start()
    ng = _outcome(8, [0.9], image)
    ng.result.frames = [FrameInfo(camera="top", width=128, height=96)]
    assert archive.submit(ng)
    archive.stop()
    assert capture.submit_reviewed_from_archive(ng.result, tmp_path / "ng", note="false reject")
    ng.result.seq = 9  # not in the archive
    assert not capture.submit_reviewed_from_archive(ng.result, tmp_path / "ng")
    capture.stop()
    assert capture.counts["review"] == 2
    meta = json.loads(next((tmp_path / "cap").rglob(f"0000000007*{SIDECAR_SUFFIX}")).read_text())
    assert meta["reason"] == "review" and meta["note"] == "escape: pit missed"
    assert meta["cameras"]["top"]["detections"][0]["class"] == "pit"


def test_agent_captures_and_from_archive_makes_a_labelling_batch(
    tmp_path: Path, tiny_detect_onnx: Path, synthetic_images: Path, agent_factory
) -> None:
    site = write_site(
        tmp_path,
        [folder_line("l1", synthetic_images, tiny_detect_onnx)],
        capture={"enabled": True, "path": "data/capture", "band": [0.0, 1.0], "min_free_mb": 0},
    )
    agent = agent_factory(site)
    agent.start()
    wait_until(lambda: agent.lines["l1"].state == "stopped")
    wait_until(lambda: agent.capture.counts["uncertain"] == 6)  # 6 parts, every one in the band
    body = urllib.request.urlopen(agent.metrics_server.url + "/metrics", timeout=10).read().decode()
    assert 'edge_inspect_capture{stat="uncertain"} 6.0' in body
    agent.stop()
    captured = tmp_path / "data" / "capture"
    runner = CliRunner()
    res = runner.invoke(
        app, ["dataset", "from-archive", str(captured), str(tmp_path / "ls"), "--format", "label-studio"]
    )
    assert res.exit_code == 0, res.output
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert len(tasks) == 6 and all("annotations" not in t for t in tasks)  # nothing verified yet
    assert '<Label value="scratch"/>' in (tmp_path / "ls" / "label_config.xml").read_text()
    res = runner.invoke(
        app, ["dataset", "from-archive", str(captured), str(tmp_path / "cvat"), "--format", "cvat"]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cvat" / "annotations.xml").read_text().count("<image ") == 6
    res = runner.invoke(
        app, ["dataset", "from-archive", str(captured), str(tmp_path / "x"), "--reason", "review"]
    )
    assert res.exit_code == 2 and "no captured images match" in res.output


def test_from_archive_keeps_to_the_import_rules() -> None:
    """training imports only vision: reading the capture archive must not load the agent."""
    code = (
        "import sys; import training.formats.batch, training.cli; "
        "print([m for m in sys.modules if m.split('.')[0] in ('edge_agent', 'opcua')])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_band_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="low < high"):
        CaptureConfig(band=(0.6, 0.3))
    assert best_confidence({}) == 0.0


def test_anomaly_parts_near_their_threshold_are_captured(tmp_path: Path, image: np.ndarray) -> None:
    """An anomaly line's part is unsure when its image score is near the threshold (`anomaly_band`,
    score / threshold); its regions' peak scores (the model's units) do not count as confidences."""
    from vision.anomaly import Anomaly

    def outcome(seq: int, score: float, peaks: list[float]) -> Outcome:
        o = _outcome(seq, peaks, image)
        det = o.detections["top"]
        regions = np.zeros(len(peaks), np.int64)
        o.detections["top"] = Detections(det.xyxy, det.confidence, regions, {0: "anomaly"})
        o.anomaly = {"top": Anomaly(score, np.zeros((12, 16), np.float32), 0.5, 0.5, (96, 128))}
        return o

    config = CaptureConfig(enabled=True, path=tmp_path / "cap", band=(0.3, 0.6), min_free_mb=0)
    capture = CaptureArchive(config)
    capture.start()
    assert capture.submit(outcome(1, 0.45, []))  # 0.9 of the threshold: unsure
    assert capture.submit(outcome(2, 0.55, [0.5]))  # 1.1 of it
    assert not capture.submit(outcome(3, 2.0, [0.45]))  # far above; the 0.45 peak is no confidence
    assert not capture.submit(outcome(4, 0.1, []))  # far below
    capture.stop()
    assert best_confidence(outcome(5, 0.1, [0.45]).detections) == 0.0
    kept = sorted(p.name for p in (tmp_path / "cap").rglob(f"*{SIDECAR_SUFFIX}"))
    assert kept == ["0000000001_P1_NG.capture.json", "0000000002_P2_NG.capture.json"]
    assert list((tmp_path / "cap").rglob("*_top_anomaly.png"))  # the map travels with the part
