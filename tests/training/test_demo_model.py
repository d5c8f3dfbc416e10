"""The shipped demo model on the shipped demo images: every labelled defect found, nothing on OK parts.

Runs `models/demo/model.onnx` through `vision` (no torch) with the demo line's model settings and the
thresholds of its active recipe (`configs/lines/demo.yaml`), against the true boxes in `images/labels.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from vision import Model
from vision.images import file_scale, read_image_file
from vision.postprocess import box_iou
from vision.rules import RecipeRules, countable

REPO = Path(__file__).resolve().parents[2]
LINE = REPO / "configs" / "lines" / "demo.yaml"
TRUTH = json.loads((REPO / "images" / "labels.json").read_text())
CARD = json.loads((REPO / "models" / "demo" / "model.json").read_text())

# The demo model trained before issue 15 (23 epochs, no operating point in its card) misses defects on
# purpose-made images; this check applies from the model the issue-15 recipe trains (its card carries the
# operating point written into the demo line). See docs/training.md, "models/demo".
pytestmark = pytest.mark.skipif(
    "operating_point" not in CARD, reason="models/demo predates the issue-15 recipe (no operating point)"
)


@pytest.fixture(scope="module")
def demo() -> tuple[Model, dict, RecipeRules]:
    line = yaml.safe_load(LINE.read_text())
    model = Model((LINE.parent / line["model"]["path"]).resolve(), providers="cpu")
    recipe = RecipeRules.model_validate(line["recipes"][line["active_recipe"]])
    return model, line["model"], recipe


@pytest.mark.parametrize("decode", ["full", "scaled"])
@pytest.mark.parametrize("name", sorted(TRUTH))
def test_demo_model_finds_every_labelled_defect(
    demo: tuple[Model, dict, RecipeRules], name: str, decode: str
) -> None:
    """Also as the demo line decodes (`scaled_decode`): 640x480 JPEGs at 320x240 for the 320 px model."""
    model, settings, recipe = demo
    image, file = read_image_file(REPO / "images" / name, model.imgsz if decode == "scaled" else None)
    det = model.predict(image, conf=settings.get("conf", 0.25), iou=settings.get("iou", 0.7)).detections
    scale = file_scale(image, file)
    if scale is not None:  # boxes back to the file's pixels, as the agent maps them
        det = det.scaled(*scale)
    det = det[countable(det, recipe)]  # what the recipe's thresholds let count
    found = [
        (n, round(float(c), 3), [round(float(v)) for v in b])
        for n, c, b in zip(det.class_names, det.confidence, det.xyxy)
    ]
    if not TRUTH[name]:
        assert not found, f"{name} is defect-free but the model reports {found}"
        return
    for truth in TRUTH[name]:
        ious = box_iou(np.asarray(truth["xyxy"], np.float32), det.xyxy)
        hits = [
            float(c)
            for n, c, iou in zip(det.class_names, det.confidence, ious, strict=True)
            if n == truth["class"] and iou >= 0.5
        ]
        assert hits, f"{name}: {truth['class']} at {truth['xyxy']} not found (model reports {found})"
    # one defect, one box: no more boxes than labelled defects
    assert len(det) == len(TRUTH[name]), f"{name}: {len(TRUTH[name])} defects labelled, boxes {found}"
