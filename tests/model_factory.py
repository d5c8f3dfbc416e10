"""Tiny real Ultralytics models for tests: trained 1 epoch on tiny synthetic images, exported to ONNX.

Built once per test session (or reused from EDGE_INSPECT_TEST_CACHE when set, to speed local runs).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import yaml

from training.synth import CLASSES, make_sample, write_dataset

IMGSZ = 64

# name -> (model yaml, task)
TINY_MODELS: dict[str, tuple[str, str]] = {
    "yolov8n": ("yolov8n.yaml", "detect"),
    "yolo11n": ("yolo11n.yaml", "detect"),
    "yolo26n": ("yolo26n.yaml", "detect"),
    "yolov8n-cls": ("yolov8n-cls.yaml", "classify"),
    "yolov8n-seg": ("yolov8n-seg.yaml", "segment"),
}


def _detect_data(root: Path) -> Path:
    return write_dataset(
        root / "det", n=10, size=(IMGSZ, IMGSZ), seed=1, val_fraction=0.2, ok_probability=0.1
    )


def _segment_data(root: Path) -> Path:
    det_yaml = _detect_data(root)
    seg = root / "seg"
    if seg.exists():
        shutil.rmtree(seg)
    shutil.copytree(det_yaml.parent, seg)
    for label in (seg / "labels").rglob("*.txt"):
        lines = []
        for line in label.read_text().split("\n"):
            if not line.strip():
                continue
            c, x, y, w, h = line.split()
            x, y, w, h = map(float, (x, y, w, h))
            poly = [x - w / 2, y - h / 2, x + w / 2, y - h / 2, x + w / 2, y + h / 2, x - w / 2, y + h / 2]
            lines.append(c + " " + " ".join(f"{v:.5f}" for v in poly))
        label.write_text("\n".join(lines) + ("\n" if lines else ""))
    data = yaml.safe_load((seg / "data.yaml").read_text())
    data["path"] = str(seg.resolve())
    (seg / "data.yaml").write_text(yaml.safe_dump(data))
    return seg / "data.yaml"


def _classify_data(root: Path) -> Path:
    rng = np.random.default_rng(3)
    cls_root = root / "cls"
    for split in ("train", "val"):
        for name in ("ok", "defect"):
            (cls_root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(6):
            img, boxes = make_sample(rng, (IMGSZ, IMGSZ), ok_probability=0.5)
            name = "defect" if boxes else "ok"
            cv2.imwrite(str(cls_root / split / name / f"{i}.png"), img)
        for name in ("ok", "defect"):  # every class needs at least one image
            d = cls_root / split / name
            if not any(d.iterdir()):
                img, _ = make_sample(rng, (IMGSZ, IMGSZ), ok_probability=1.0 if name == "ok" else 0.0)
                cv2.imwrite(str(d / "x.png"), img)
    return cls_root


def build_tiny_model(name: str, workdir: Path) -> Path:
    """Train `name` for 1 epoch on tiny synthetic data and export it to ONNX; returns the .onnx path."""
    from training.offline import ultralytics_offline

    ultralytics_offline(workdir / "ultralytics-settings")
    from ultralytics import YOLO

    cfg, task = TINY_MODELS[name]
    data: Path
    if task == "detect":
        data = _detect_data(workdir / "data")
    elif task == "segment":
        data = _segment_data(workdir / "data")
    else:
        data = _classify_data(workdir / "data")
    model = YOLO(cfg, task=task)
    model.train(
        data=str(data),
        epochs=1,
        imgsz=IMGSZ,
        batch=4,
        workers=0,
        device="cpu",
        plots=False,
        amp=False,
        project=str(workdir / "runs"),
        name=name,
        exist_ok=True,
        verbose=False,
        val=False,
        seed=0,
    )
    trained = YOLO(str(workdir / "runs" / name / "weights" / "last.pt"))
    # nms=False keeps YOLO26's one-to-one (NMS-free, [B, N, 6]) head; other heads ignore it.
    onnx_path = Path(trained.export(format="onnx", imgsz=IMGSZ, dynamic=True, simplify=True, nms=False))
    return onnx_path


def tiny_model(name: str, session_dir: Path) -> Path:
    cache = os.environ.get("EDGE_INSPECT_TEST_CACHE")
    if cache:
        cached = Path(cache) / f"{name}.onnx"
        if cached.exists():
            return cached
    path = build_tiny_model(name, session_dir / name)
    if cache:
        Path(cache).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(cache) / f"{name}.onnx")
        return Path(cache) / f"{name}.onnx"
    return path


__all__ = ["CLASSES", "IMGSZ", "TINY_MODELS", "tiny_model"]


# Untrained models built straight from their YAML: random weights give many boxes of every size and
# place at a tiny confidence, which exercises decoding, NMS and box mapping far better than a 1-epoch
# model (which collapses to one whole-image box). name -> (model yaml, dynamic input axes)
UNTRAINED_MODELS: dict[str, tuple[str, bool]] = {
    "yolov8n": ("yolov8n.yaml", True),
    "yolo11n": ("yolo11n.yaml", True),
    # end-to-end heads bake TopK's k from the export size, so a dynamic one fails on smaller (rect)
    # inputs even in Ultralytics itself: export static, as a factory would
    "yolo26n": ("yolo26n.yaml", False),
    "yolov8n-seg": ("yolov8n-seg.yaml", True),
}
UNTRAINED_IMGSZ = 96


def untrained_model(name: str, session_dir: Path) -> Path:
    """Export an untrained `name` (from its model YAML) to ONNX at 96 px; returns the .onnx path."""
    from training.offline import ultralytics_offline

    workdir = session_dir / f"untrained-{name}"
    workdir.mkdir(parents=True, exist_ok=True)
    ultralytics_offline(workdir / "ultralytics-settings")
    import torch
    from ultralytics import YOLO

    torch.manual_seed(0)  # same random weights every run: failures reproduce
    cfg, dynamic = UNTRAINED_MODELS[name]
    model = YOLO(cfg)
    model.model.names = {i: f"class{i}" for i in range(len(model.model.names))}
    model.save(str(workdir / f"{name}.pt"))
    exported = YOLO(str(workdir / f"{name}.pt")).export(
        format="onnx", imgsz=UNTRAINED_IMGSZ, dynamic=dynamic, simplify=True, nms=False
    )
    return Path(exported)
