"""A folder source that decodes JPEGs at the model's size (`scaled_decode: true`): the demo model on the
demo images gives the verdicts and boxes of a full decode, measured in the file's pixels, and the archive
keeps (or draws on) the pictures at the file's size."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import yaml
from agent_helpers import folder_line, wait_until, write_site

from contract.result import InspectionResult, ModelInfo
from edge_agent.archive import Archive, archived_image
from edge_agent.config import ArchiveConfig
from edge_agent.outcome import Outcome
from edge_agent.sources.base import Frame
from vision.detections import Detections
from vision.images import read_image_file
from vision.postprocess import box_iou

REPO = Path(__file__).resolve().parents[2]
DEMO = yaml.safe_load((REPO / "configs" / "lines" / "demo.yaml").read_text())


def test_scaled_decode_gives_the_full_decodes_results_in_the_files_pixels(tmp_path, agent_factory):
    frames = tmp_path / "frames"
    frames.mkdir()
    for jpg in sorted((REPO / "images").glob("*.jpg")):
        shutil.copy(jpg, frames)
    sizes = {str(p): cv2.imread(str(p)).shape[:2] for p in frames.iterdir()}
    assert (480, 640) in sizes.values()  # the demo's 640x480 parts shrink 2x into its 320 px model

    model = {"path": str(REPO / "models" / "demo" / "model.onnx"), "conf": DEMO["model"]["conf"]}
    model |= {"iou": DEMO["model"]["iou"], "threads": 1}
    lines = []
    for name, scaled in (("full", False), ("scaled", True)):
        line = folder_line(name, frames, Path(model["path"]), recipes=DEMO["recipes"])
        line["model"] = model
        line["cameras"][0]["source"] |= {"glob": ["*.jpg"], "scaled_decode": scaled}
        lines.append(line)
    # PNG archive with annotated copies: both are encoded from the pixels at the file's size
    archive = {"path": "data/archive", "format": "png", "annotated": True, "ok_sample_rate": 1.0}
    agent = agent_factory(write_site(tmp_path, lines, archive=archive))
    agent.start()
    wait_until(lambda: all(agent.lines[n].state == "stopped" for n in ("full", "scaled")), timeout=60)
    wait_until(lambda: agent.archive.stats.written == 4 * len(sizes), timeout=30)

    results = {
        line: {r.frames[0].source_ref: r for r in agent.journal.since(0, line=line)}
        for line in ("full", "scaled")
    }
    assert set(results["full"]) == set(results["scaled"]) == set(sizes)
    assert {r.verdict for r in results["full"].values()} == {"OK", "NG"}
    # the scaled line's source was told the model's size, and its model saw other pixels than the full one's
    assert [cam.source.fit for cam in agent.lines["scaled"]._cameras] == [(320, 320)]
    confidences = {
        line: sorted(d.confidence for r in results[line].values() for d in r.defects) for line in results
    }
    assert confidences["full"] != confidences["scaled"]
    archive_root = tmp_path / "data" / "archive"
    for ref, full in results["full"].items():
        scaled = results["scaled"][ref]
        assert scaled.verdict == full.verdict and scaled.reasons == full.reasons, ref
        h, w = sizes[ref]
        assert (scaled.frames[0].height, scaled.frames[0].width) == (h, w), ref
        assert len(scaled.defects) == len(full.defects), ref
        for a in full.defects:
            twin = [
                b
                for b in scaled.defects
                if b.class_name == a.class_name and box_iou(np.array(a.xyxy), np.array([b.xyxy]))[0] > 0.9
            ]
            assert twin, f"{ref}: {a.class_name} at {a.xyxy} not found in {scaled.defects}"
            assert abs(twin[0].confidence - a.confidence) < 0.05, ref
        for annotated in (False, True):
            path = archived_image(archive_root, scaled, "top", annotated=annotated)
            assert path is not None and cv2.imread(str(path)).shape[:2] == (h, w), path
        raw = cv2.imread(str(archived_image(archive_root, scaled, "top")))
        np.testing.assert_array_equal(raw, cv2.imread(ref))  # the full decode, not the smaller one


def test_the_archive_keeps_the_file_of_a_frame_decoded_smaller(tmp_path: Path) -> None:
    from training.synth import make_sample

    source = tmp_path / "cam.jpg"
    cv2.imwrite(str(source), make_sample(np.random.default_rng(3), (480, 640))[0])
    pixels, file = read_image_file(source, fit=(240, 320))
    assert pixels.shape[:2] == (240, 320)
    frame = Frame(pixels, "top", str(source), 1, file=file)
    det = Detections(np.array([[100, 200, 300, 260]], np.float32), np.array([0.9]), np.array([0]))
    model = ModelInfo(name="m", version="1")
    result = InspectionResult(seq=1, site="s", line="l", part_id="P1", recipe="r", verdict="NG", model=model)
    archive = Archive(ArchiveConfig(path=tmp_path / "arch", min_free_mb=0, annotated=True), seed=0)
    archive.start()
    assert archive.submit(Outcome(result, {"top": frame}, {"top": det}, {"top": np.array([True])}))
    archive.stop()
    assert archived_image(tmp_path / "arch", result, "top").read_bytes() == source.read_bytes()
    drawn = cv2.imread(str(archived_image(tmp_path / "arch", result, "top", annotated=True)))
    assert drawn.shape[:2] == (480, 640)
    edge = drawn[210:250, 100].mean(0)  # the box's left edge at x=100 in the file's pixels, class 0's red
    assert edge[2] > 180 and edge[2] - edge[:2].max() > 80
