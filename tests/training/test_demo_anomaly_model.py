"""The shipped demo anomaly model on the shipped demo images: trained on good synthetic parts only, it flags
every NG sample image (the generator's scratches, pits, cracks and stains it never saw) and no OK one.

Runs `models/demo-anomaly/model.onnx` through `vision` with the settings of `configs/lines/demo-anomaly.yaml`
(thresholds from the model card) against `images/labels.json`; no torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from vision import load_model, read_image

REPO = Path(__file__).resolve().parents[2]
LINE = REPO / "configs" / "lines" / "demo-anomaly.yaml"
TRUTH = json.loads((REPO / "images" / "labels.json").read_text())
CARD = json.loads((REPO / "models" / "demo-anomaly" / "model.json").read_text())


def test_demo_anomaly_model_flags_every_ng_sample_and_no_ok_one() -> None:
    line = yaml.safe_load(LINE.read_text())
    settings = line["model"]
    model = load_model(
        (LINE.parent / settings["path"]).resolve(),
        providers="cpu",
        min_region_area=settings["min_region_area"],
    )
    assert model.image_threshold == CARD["thresholds"]["image"]  # the card's operating point
    for name, boxes in TRUTH.items():
        pred = model.predict(read_image(REPO / "images" / name))
        assert pred.anomaly.anomalous == bool(boxes), (name, pred.anomaly.score)
        if not boxes:
            assert len(pred.detections) == 0, name
            continue
        # every region lies on a labelled defect (boxes in image pixels)
        truth = np.array([b["xyxy"] for b in boxes], np.float32)
        for x1, y1, x2, y2 in pred.detections.xyxy:
            overlap = (np.minimum(x2, truth[:, 2]) > np.maximum(x1, truth[:, 0])) & (
                np.minimum(y2, truth[:, 3]) > np.maximum(y1, truth[:, 1])
            )
            assert overlap.any(), (name, [x1, y1, x2, y2])


def test_demo_anomaly_card_holds_its_operating_point_and_evaluation() -> None:
    assert CARD["task"] == "anomaly" and CARD["input"]["imgsz"] == [224, 224]
    point = CARD["operating_point"]
    assert (
        point["target_false_reject_rate"] == 0.01 and point["image_threshold"] == CARD["thresholds"]["image"]
    )
    metrics = CARD["metrics"]["fp32"]
    assert metrics["image_auroc"] > 0.95 and metrics["defect_images"] == 100 and metrics["good_images"] == 100
    for plot in metrics["plots"].values():
        assert (REPO / "models" / "demo-anomaly" / plot).is_file()
