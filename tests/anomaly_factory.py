"""Small real anomaly ONNX models for tests, built with the `onnx` helper API (no training framework).

The model is the simplest anomaly model there is: the mean of good images, and per pixel
`map = mean over channels of |x - mean_image|`, `score = max(map)`. It follows the shared contract
(docs/anomaly.md): input `input` float32 NCHW RGB in [0, 1] at a fixed H×W, outputs `pred_score` (N,) and
`anomaly_map` (N, 1, H, W), metadata `edge_inspect_kind` = "anomaly" and the thresholds.

The parts are our own: one textured surface (training.synth) lit the same way, plus sensor noise; a
defect part has a dark scratch painted on at a known place.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from training.synth import surface
from vision.preprocess import anomaly_input_tensor

IMGSZ = (48, 64)  # (h, w) of the model input
PART_SIZE = (96, 128)  # (h, w) of the camera images: twice the input, so the map is resized back


def part_surface(seed: int = 7, size: tuple[int, int] = PART_SIZE) -> np.ndarray:
    return surface(np.random.default_rng(seed), *size, kind="plastic")


def good_part(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    noisy = base.astype(np.float32) + rng.normal(0, 2.0, base.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


#: where `defect_part` paints its scratch, in PART_SIZE pixels (x1, y1, x2, y2)
DEFECT_BOX = (40, 30, 90, 36)


def defect_part(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    img = good_part(rng, base)
    x1, y1, x2, y2 = DEFECT_BOX
    img[y1:y2, x1:x2] = (img[y1:y2, x1:x2].astype(np.int16) - 90).clip(0, 255).astype(np.uint8)
    return img


def mean_image(good: list[np.ndarray], imgsz: tuple[int, int] = IMGSZ) -> np.ndarray:
    """The mean good image as the model sees it: (1, 3, H, W) float32, RGB in [0, 1]."""
    return anomaly_input_tensor(good, imgsz).mean(axis=0, keepdims=True)


def reference_scores(tensor: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the graph computes, in numpy: (scores (N,), maps (N, H, W))."""
    maps = np.abs(tensor - mean).mean(axis=1)
    return maps.reshape(len(maps), -1).max(axis=1), maps


def build_mean_image_model(
    path: Path,
    good: list[np.ndarray],
    *,
    image_threshold: float | None = None,
    pixel_threshold: float | None = None,
    imgsz: tuple[int, int] = IMGSZ,
    card: dict | None = None,
    name: str = "mean-image",
    version: str = "1",
    our_metadata: bool = True,
) -> Path:
    """Write the mean-image anomaly model of `good` (8-bit BGR images) to `path` (and `card` as
    model.json beside it when given). Thresholds default to 1.5x the highest score of the good images.
    `our_metadata=False` leaves the metadata out and adds a `pred_label` output (score > 0.5), as an
    anomalib export with its post-processor."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    mean = mean_image(good, imgsz)
    scores, maps = reference_scores(anomaly_input_tensor(good, imgsz), mean)
    if image_threshold is None:
        image_threshold = float(scores.max()) * 1.5
    if pixel_threshold is None:
        pixel_threshold = float(maps.max()) * 1.5
    h, w = imgsz
    nodes = [
        helper.make_node("Sub", ["input", "mean_image"], ["diff"]),
        helper.make_node("Abs", ["diff"], ["abs_diff"]),
        helper.make_node("ReduceMean", ["abs_diff", "channel_axis"], ["anomaly_map"], keepdims=1),
        helper.make_node("ReduceMax", ["anomaly_map", "image_axes"], ["pred_score"], keepdims=0),
    ]
    outputs = [
        helper.make_tensor_value_info("pred_score", TensorProto.FLOAT, ["N"]),
        helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["N", 1, h, w]),
    ]
    if not our_metadata:
        nodes.append(helper.make_node("Greater", ["pred_score", "half"], ["pred_label"]))
        outputs.insert(1, helper.make_tensor_value_info("pred_label", TensorProto.BOOL, ["N"]))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, h, w])],
        outputs,
        initializer=[
            *([] if our_metadata else [numpy_helper.from_array(np.array(0.5, np.float32), "half")]),
            numpy_helper.from_array(mean.astype(np.float32), "mean_image"),
            numpy_helper.from_array(np.array([1], np.int64), "channel_axis"),
            numpy_helper.from_array(np.array([1, 2, 3], np.int64), "image_axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8  # readable by every ONNX Runtime >= 1.14
    meta = {
        "edge_inspect_kind": "anomaly",
        "image_threshold": repr(float(image_threshold)),
        "pixel_threshold": repr(float(pixel_threshold)),
        "imgsz": str([h, w]),
        "name": name,
        "version": version,
    }
    for key, value in meta.items() if our_metadata else ():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    if card is not None:
        (path.parent / "model.json").write_text(json.dumps(card, indent=2))
    return path


def write_parts(folder: Path, images: list[np.ndarray], prefix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        p = folder / f"{prefix}_{i:03d}.png"
        cv2.imwrite(str(p), img)
        paths.append(p)
    return paths
