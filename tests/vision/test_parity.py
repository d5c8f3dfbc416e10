"""Our runtime against Ultralytics' own ONNX predict on the same model files and images.

Same boxes (IoU >= 0.99), same classes, confidence within 1e-3, for every box above the threshold;
same masks for segmentation; same probabilities for classification.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vision import Model
from vision.postprocess import box_iou

pytestmark = pytest.mark.train
ultralytics = pytest.importorskip("ultralytics")

LOW_CONF = 1e-7  # untrained heads score ~1e-5: a tiny threshold brings out dozens of boxes


def ultralytics_predict(path: Path, task: str, image: np.ndarray, conf: float, imgsz: int):
    from ultralytics import YOLO

    return YOLO(str(path), task=task).predict(image, conf=conf, imgsz=imgsz, verbose=False)[0]


def assert_same_boxes(ours, theirs) -> None:
    ux = theirs.boxes.xyxy.numpy()
    assert len(ours) == len(ux), f"{len(ours)} boxes vs Ultralytics {len(ux)}"
    assert len(ours) > 0, "the comparison needs boxes to compare"
    ious = np.array([box_iou(a, b[None])[0] for a, b in zip(ours.xyxy, ux)])
    assert ious.min() >= 0.99
    np.testing.assert_array_equal(ours.class_id, theirs.boxes.cls.numpy().astype(int))
    np.testing.assert_allclose(ours.confidence, theirs.boxes.conf.numpy(), atol=1e-3)


@pytest.mark.parametrize("name", ["yolov8n", "yolo11n", "yolo26n"])
def test_detection_matches_ultralytics(name, untrained_models, odd_images):
    path = untrained_models[name]
    model = Model(path, conf=LOW_CONF)
    assert model.end2end == (name == "yolo26n")
    for image in odd_images:
        theirs = ultralytics_predict(path, "detect", image, LOW_CONF, model.imgsz[0])
        assert_same_boxes(model.predict(image).detections, theirs)


def test_segmentation_matches_ultralytics(untrained_models, odd_images):
    from ultralytics.utils.ops import scale_masks

    path = untrained_models["yolov8n-seg"]
    model = Model(path, conf=LOW_CONF)
    assert model.task == "segment"
    for image in odd_images:
        theirs = ultralytics_predict(path, "segment", image, LOW_CONF, model.imgsz[0])
        ours = model.predict(image).detections
        assert_same_boxes(ours, theirs)
        # Ultralytics keeps masks at the letterboxed input size; bring them to the image to compare
        their_masks = scale_masks(theirs.masks.data[None].float(), image.shape[:2])[0].numpy() > 0.5
        assert ours.mask is not None and ours.mask.shape == their_masks.shape
        assert (ours.mask != their_masks).mean() < 0.001


def test_trained_detection_matches_ultralytics(tiny_models, odd_images):
    path = tiny_models["yolov8n"]
    model = Model(path, conf=1e-4)
    for image in odd_images:
        theirs = ultralytics_predict(path, "detect", image, 1e-4, model.imgsz[0])
        assert_same_boxes(model.predict(image).detections, theirs)


def test_classification_matches_ultralytics(tiny_models, odd_images):
    path = tiny_models["yolov8n-cls"]
    model = Model(path)
    assert model.task == "classify"
    for image in odd_images:
        theirs = ultralytics_predict(path, "classify", image, 0.25, model.imgsz[0])
        ours = model.predict(image)
        np.testing.assert_allclose(ours.probs, theirs.probs.data.numpy(), atol=1e-3)
        assert ours.top1 == theirs.probs.top1
