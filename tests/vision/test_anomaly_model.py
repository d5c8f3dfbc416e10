"""Anomaly models in `vision`: real ONNX Runtime sessions on real model files (tests.anomaly_factory)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.anomaly_factory import (
    DEFECT_BOX,
    IMGSZ,
    build_mean_image_model,
    defect_part,
    good_part,
    mean_image,
    part_surface,
    reference_scores,
)
from vision import ModelLoadError, load_model
from vision.anomaly import AnomalyModel
from vision.model import Model
from vision.postprocess import box_iou
from vision.preprocess import anomaly_input_tensor

pytest.importorskip("onnx")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def parts() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(11)
    base = part_surface()
    return {
        "train": [good_part(rng, base) for _ in range(12)],
        "good": [good_part(rng, base) for _ in range(6)],
        "defect": [defect_part(rng, base) for _ in range(6)],
    }


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory, parts) -> Path:
    return build_mean_image_model(tmp_path_factory.mktemp("anomaly") / "model.onnx", parts["train"])


def test_load_model_picks_the_anomaly_kind(model_path: Path) -> None:
    model = load_model(model_path, providers="cpu")
    assert isinstance(model, AnomalyModel)
    assert model.task == "anomaly" and model.names == {0: "anomaly"}
    assert model.imgsz == IMGSZ and model.dynamic_batch
    assert model.version == "1" and len(model.sha256) == 64
    assert model.image_threshold > 0 and model.pixel_threshold > 0
    # a detector loads through the same entry point as before
    detector = load_model(REPO / "models" / "demo" / "model.onnx", providers="cpu", conf=0.3)
    assert isinstance(detector, Model) and detector.task == "detect" and detector.conf == 0.3


def test_scores_and_map_are_the_graphs(model_path: Path, parts) -> None:
    """Our pre-processing + ORT give what the model computes (numpy reference) on the same tensor."""
    model = load_model(model_path, providers="cpu")
    images = parts["good"] + parts["defect"]
    mean = mean_image(parts["train"])
    want_scores, want_maps = reference_scores(anomaly_input_tensor(images, IMGSZ), mean)
    preds = model.predict_batch(images)
    for pred, score, amap, image in zip(preds, want_scores, want_maps, images, strict=True):
        assert pred.anomaly is not None
        assert pred.anomaly.score == pytest.approx(float(score), abs=1e-6)
        assert pred.anomaly.map.shape == image.shape[:2] == pred.shape
        # the graph's map resized back to the image (bilinear)
        h, w = image.shape[:2]
        want = cv2.resize(amap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(pred.anomaly.map, want, atol=1e-6)
        assert set(pred.timing_ms) == {"preprocess", "inference", "postprocess"}


def test_defects_separate_and_regions_locate_them(model_path: Path, parts) -> None:
    model = load_model(model_path, providers="cpu")
    good = [model.predict(im) for im in parts["good"]]
    defect = [model.predict(im) for im in parts["defect"]]
    assert max(p.anomaly.score for p in good) < model.image_threshold
    assert min(p.anomaly.score for p in defect) >= model.image_threshold
    assert all(not p.anomaly.anomalous and len(p.detections) == 0 for p in good)
    for p in defect:
        assert p.anomaly.anomalous
        assert p.anomaly.reason().startswith("anomaly score ") and " ≥ " in p.anomaly.reason()
        regions = p.detections
        assert regions.class_names[0] == "anomaly"
        best = int(np.argmax(regions.confidence))
        assert box_iou(np.array(DEFECT_BOX, np.float32), regions.xyxy[best : best + 1])[0] > 0.5
        assert regions.confidence[best] == pytest.approx(float(p.anomaly.raw_map.max()), rel=1e-6)
        x1, y1, x2, y2 = DEFECT_BOX
        assert regions.data["area_px"][best] == pytest.approx((x2 - x1) * (y2 - y1), rel=0.5)


def test_grey_and_16_bit_images_are_scored(model_path: Path, parts) -> None:
    model = load_model(model_path, providers="cpu")
    grey = cv2.cvtColor(parts["defect"][0], cv2.COLOR_BGR2GRAY)
    pred = model.predict(grey)
    assert pred.anomaly.map.shape == grey.shape and pred.anomaly.anomalous
    assert model.predict(grey.astype(np.uint16) * 257).anomaly.score == pytest.approx(pred.anomaly.score)


def test_threshold_sources_card_wins_then_arguments(tmp_path: Path, parts) -> None:
    card = {"task": "anomaly", "version": "2026-12-07", "thresholds": {"image": 0.9, "pixel": 0.8}}
    path = build_mean_image_model(tmp_path / "m" / "model.onnx", parts["train"], card=card)
    model = load_model(path, providers="cpu")
    assert (model.image_threshold, model.pixel_threshold) == (0.9, 0.8)
    assert model.version == "2026-12-07"
    assert not model.predict(parts["defect"][0]).anomaly.anomalous  # 0.9 is above every score here
    overridden = load_model(path, providers="cpu", image_threshold=0.01, pixel_threshold=0.02)
    assert (overridden.image_threshold, overridden.pixel_threshold) == (0.01, 0.02)
    # a detection card beside it is not an anomaly card: the metadata's thresholds apply
    (tmp_path / "m" / "model.json").write_text(json.dumps({"task": "detect"}))
    assert load_model(path, providers="cpu").image_threshold != 0.9


def test_anomalib_layout_without_metadata_uses_its_normalised_threshold(tmp_path: Path, parts) -> None:
    path = build_mean_image_model(tmp_path / "model.onnx", parts["train"], our_metadata=False)
    model = load_model(path, providers="cpu")
    assert isinstance(model, AnomalyModel) and model.anomalib
    assert (model.image_threshold, model.pixel_threshold) == (0.5, 0.5)
    assert model.info()["format"] == "anomalib"
    assert model.info()["runtime"] == "onnxruntime:CPU:f32"  # as a detection model's info() says


def test_wrong_options_and_files_are_clear_errors(tmp_path: Path, model_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="names= does not apply"):
        load_model(model_path, providers="cpu", names=["a"])
    with pytest.raises(ModelLoadError, match="anomaly models only"):
        load_model(REPO / "models" / "demo" / "model.onnx", providers="cpu", image_threshold=0.5)
    with pytest.raises(ModelLoadError, match="fixed input size"):
        AnomalyModel(model_path, providers="cpu", imgsz=32)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(model_path.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
        load_model(broken, providers="cpu")
    with pytest.raises(ModelLoadError, match="needs outputs"):
        AnomalyModel(REPO / "models" / "demo" / "model.onnx", providers="cpu")
    with pytest.raises(ValueError, match="tiling"):
        load_model(model_path, providers="cpu").predict(np.zeros((64, 64, 3), np.uint8), tile=(2, 2))


def test_anomalib_layout_without_its_post_processor_needs_thresholds(tmp_path: Path, parts) -> None:
    """No `pred_label` output: anomalib's scores were not normalised, so there is no threshold to assume."""
    import onnx

    path = build_mean_image_model(tmp_path / "model.onnx", parts["train"], our_metadata=False)
    model = onnx.load(str(path))
    label = next(o for o in model.graph.output if o.name == "pred_label")
    model.graph.output.remove(label)
    onnx.save(model, str(path))
    with pytest.raises(ModelLoadError, match="no image threshold"):
        load_model(path, providers="cpu")
    assert load_model(path, providers="cpu", image_threshold=0.2).pixel_threshold == 0.2


def test_infer_command_scores_and_draws_the_heat(tmp_path: Path, model_path: Path, parts) -> None:
    from typer.testing import CliRunner

    from edge_agent.cli import app

    images = [tmp_path / "good.png", tmp_path / "defect.png"]
    cv2.imwrite(str(images[0]), parts["good"][0])
    cv2.imwrite(str(images[1]), parts["defect"][0])
    args = ["infer", str(model_path), *map(str, images), "--json", "--providers", "cpu"]
    args += ["--save", str(tmp_path)]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    good, defect = (json.loads(line) for line in out.stdout.splitlines())
    assert not good["anomaly"]["anomalous"] and defect["anomaly"]["anomalous"]
    assert [d["class"] for d in defect["detections"]] == ["anomaly"]
    drawn = cv2.imread(defect["saved"])
    x1, y1, x2, y2 = DEFECT_BOX
    assert drawn[y1:y2, x1:x2, 2].mean() > parts["defect"][0][y1:y2, x1:x2, 2].mean() + 40  # heat: red
