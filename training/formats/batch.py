"""Labelling batches: images + the labelling tool's file, from a dataset, a folder or the capture archive.

    DST/images/...            copies of the images (unique names)
    DST/tasks.json            Label Studio: tasks (annotations = dataset labels, predictions = model boxes)
    DST/label_config.xml      Label Studio: the labelling interface with the classes
    DST/annotations.xml       CVAT for images 1.1 (labels as manual boxes, model boxes as auto boxes)
    DST/batch.json            what went in: source of each image, classes, model

Example (needs no model when the dataset has labels):
    >>> write_batch(dataset_sources("data/line1", "val"), "batch/", "cvat")        # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from training.errors import TrainingInputError
from training.formats import FORMATS, BatchBox, BatchImage


@dataclass
class BatchSource:
    image: Path
    labels: list[BatchBox] | None = None  # None = not labelled yet
    predictions: list[BatchBox] = field(default_factory=list)
    origin: dict[str, object] = field(default_factory=dict)  # where it came from (for batch.json)


def dataset_sources(data: str | Path, split: str = "all") -> tuple[list[BatchSource], list[str]]:
    """The images of a dataset split (`all` = every split) with their labels, and the class names."""
    import cv2

    from training.datasets import SPLITS, class_names, load_data_yaml, read_labels, split_images

    data_yaml, cfg = load_data_yaml(data)
    names = class_names(cfg)
    if split == "all":
        images: list[Path] = []
        for s in SPLITS:
            if cfg.get(s):
                images += split_images(data_yaml, s)
        images = sorted(set(images))
    else:
        images = split_images(data_yaml, split)
    sources = []
    for path in images:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise TrainingInputError(f"{path}: cannot be read as an image")
        h, w = img.shape[:2]
        lab = read_labels(path)
        boxes = [
            BatchBox(
                names[int(c)], ((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
            )
            for c, (cx, cy, bw, bh) in zip(lab.class_ids, lab.boxes_norm)
        ]
        sources.append(BatchSource(path, boxes, origin={"dataset": str(data_yaml), "image": str(path)}))
    return sources, [names[k] for k in sorted(names)]


def folder_sources(folder: str | Path) -> list[BatchSource]:
    from training.raw_labels import IMAGE_SUFFIXES

    root = Path(folder)
    if not root.is_dir():
        raise TrainingInputError(f"{root} is not a folder of images")
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise TrainingInputError(f"{root}: no images found")
    return [BatchSource(p, None, origin={"image": str(p)}) for p in images]


CAPTURE_SIDECAR = ".capture.json"  # written by the agent's capture (edge_agent/capture.py documents it)


def capture_sources(
    archive: str | Path, reasons: Sequence[str] | None = None, line: str | None = None
) -> tuple[list[BatchSource], list[str]]:
    """The captured frames under `archive` (the agent's `capture.path`) with the model's boxes at capture
    time as pre-annotations, and the class names the sidecars list. Frames the quota deleted are skipped."""
    root = Path(archive).expanduser()
    if not root.is_dir():
        raise TrainingInputError(f"capture archive {root} does not exist")
    sources: list[BatchSource] = []
    classes: list[str] = []
    sidecars = sorted(root.rglob(f"*{CAPTURE_SIDECAR}"))
    if not sidecars:
        raise TrainingInputError(f"{root}: no captured parts (*{CAPTURE_SIDECAR}); is capture enabled?")
    for sidecar in sidecars:
        try:
            meta = json.loads(sidecar.read_text())
            cameras = dict(meta["cameras"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TrainingInputError(f"{sidecar}: not a capture sidecar ({exc})") from exc
        if reasons and meta.get("reason") not in reasons:
            continue
        if line and meta.get("line") != line:
            continue
        for name in meta.get("classes") or []:
            if name not in classes:
                classes.append(name)
        for cam, info in cameras.items():
            image = sidecar.parent / str(info["file"])
            if not image.is_file():
                continue
            boxes = [
                BatchBox(str(d["class"]), tuple(float(v) for v in d["xyxy"]), float(d["confidence"]))  # type: ignore[arg-type]
                for d in info.get("detections") or []
            ]
            for b in boxes:
                if b.label not in classes:
                    classes.append(b.label)
            origin = {
                k: meta.get(k) for k in ("reason", "best_confidence", "seq", "part_id", "line", "timestamp")
            }
            sources.append(
                BatchSource(image, None, boxes, {**origin, "camera": cam, "model": meta.get("model")})
            )
    return sources, classes


def add_predictions(
    sources: Iterable[BatchSource], model_path: str | Path, conf: float = 0.25, providers: str = "cpu"
) -> list[str]:
    """Run the model (through `vision`) on every image: its boxes become the pre-annotations."""
    from vision import Model, read_image

    model = Model(model_path, providers=providers)
    for src in sources:
        det = model.predict(read_image(src.image), conf=conf).detections
        src.predictions = [
            BatchBox(model.names[int(c)], tuple(float(v) for v in xyxy), float(s))  # type: ignore[arg-type]
            for xyxy, s, c in zip(det.xyxy, det.confidence, det.class_id)
        ]
    return [model.names[k] for k in sorted(model.names)]


def write_batch(
    sources: Sequence[BatchSource],
    dst: str | Path,
    fmt: str,
    classes: Sequence[str],
    url_prefix: str | None = None,
    model_version: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Copy the images into `dst/images` and write the tool's file; returns that file's path."""
    import cv2

    from training.formats import cvat, label_studio

    if fmt not in FORMATS:
        raise TrainingInputError(f"unknown labelling format {fmt!r}: use {' or '.join(FORMATS)}")
    if not sources:
        raise TrainingInputError("nothing to export: no images")
    out = Path(dst).expanduser()
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise TrainingInputError(f"destination {out} is not empty (use --overwrite to replace it)")
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    unknown = sorted({b.label for s in sources for b in (s.labels or []) + s.predictions} - set(classes))
    if unknown:
        raise TrainingInputError(f"boxes of classes {unknown} that are not in the class list {list(classes)}")
    batch: list[BatchImage] = []
    used: set[str] = set()
    manifest = []
    for src in sources:
        name, n = src.image.name, 2
        while name.lower() in used:
            name = f"{src.image.stem}_{n}{src.image.suffix}"
            n += 1
        used.add(name.lower())
        target = out / "images" / name
        shutil.copyfile(src.image, target)
        img = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise TrainingInputError(f"{src.image}: cannot be read as an image")
        h, w = img.shape[:2]
        batch.append(
            BatchImage(target, w, h, list(src.labels or []), list(src.predictions), src.labels is not None)
        )
        manifest.append({"file": f"images/{name}", **src.origin})
    if fmt == "label-studio":
        (out / "label_config.xml").write_text(label_studio.label_config(classes))
        result = label_studio.write_tasks(
            batch, out, out / "tasks.json", url_prefix or label_studio.DEFAULT_URL_PREFIX, model_version
        )
    else:
        result = cvat.write_xml(batch, classes, out / "annotations.xml", task_name=out.name)
    (out / "batch.json").write_text(
        json.dumps(
            {"format": fmt, "classes": list(classes), "model": model_version, "images": manifest}, indent=1
        )
        + "\n"
    )
    return result
