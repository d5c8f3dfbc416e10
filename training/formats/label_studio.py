"""Label Studio: its JSON export in, a task list with annotations and/or predictions out.

Label Studio keeps one task per image: `data.image` (a URL such as `/data/upload/3/8f2c1a9e-part_01.jpg`
or `/data/local-files/?d=batch/images/part_01.jpg`), `annotations` (what labellers submitted; each a
`result` list) and `predictions` (pre-annotations shown to them). A rectangle is a `rectanglelabels` region
whose `value` holds `x`, `y`, `width`, `height` in percent of the image, `rotation` in degrees and
`rectanglelabels` (the class names).

Import rules: the newest submitted annotation of a task is its answer (an empty result = a defect-free
image); cancelled (skipped) annotations and tasks nobody labelled are left out and reported; rotated
rectangles become their axis-aligned envelope (reported); predictions are never taken as labels.
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from training.errors import TrainingInputError
from training.formats import BatchBox, BatchImage
from training.raw_labels import RawBox, RawImage, index_images

FROM_NAME = "label"  # the RectangleLabels control in `label_config`
TO_NAME = "image"  # the Image object
DEFAULT_URL_PREFIX = "/data/local-files/?d=images/"
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio prefixes uploaded file names with a hash


def label_config(classes: Sequence[str]) -> str:
    """The labelling interface (Settings > Labeling Interface) matching the tasks written here."""
    labels = "\n".join(f"    <Label value={quoteattr(c)}/>" for c in classes)
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
        f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">\n'
        f"{labels}\n"
        "  </RectangleLabels>\n"
        "</View>\n"
    )


def _region(box: BatchBox, w: int, h: int) -> dict[str, Any]:
    x1, y1, x2, y2 = box.xyxy
    region: dict[str, Any] = {
        "id": uuid.uuid4().hex[:10],
        "type": "rectanglelabels",
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {
            "x": 100 * x1 / w,
            "y": 100 * y1 / h,
            "width": 100 * (x2 - x1) / w,
            "height": 100 * (y2 - y1) / h,
            "rotation": 0,
            "rectanglelabels": [box.label],
        },
    }
    if box.score is not None:
        region["score"] = round(float(box.score), 4)
    return region


def write_tasks(
    batch: Sequence[BatchImage],
    root: Path,
    dst: Path,
    url_prefix: str = DEFAULT_URL_PREFIX,
    model_version: str | None = None,
) -> Path:
    """Write the Label Studio task list `dst` (Import > Upload the JSON); image URLs are `url_prefix` +
    the image's path relative to `root` (the batch folder)."""
    tasks = []
    for item in batch:
        rel = item.path.relative_to(root / "images").as_posix()
        task: dict[str, Any] = {"data": {"image": url_prefix + rel}}
        if item.labelled:
            task["annotations"] = [
                {
                    "result": [_region(b, item.width, item.height) for b in item.labels],
                    "was_cancelled": False,
                    "ground_truth": False,
                }
            ]
        if item.predictions:
            scores = [b.score for b in item.predictions if b.score is not None]
            task["predictions"] = [
                {
                    "model_version": model_version or "edge-inspect",
                    "score": round(float(min(scores)), 4) if scores else None,
                    "result": [_region(b, item.width, item.height) for b in item.predictions],
                }
            ]
        tasks.append(task)
    dst.write_text(json.dumps(tasks, indent=1) + "\n")
    return dst


# ------------------------------------------------------------------------------------------ import
def image_name_from_url(url: str) -> str:
    """The file name a task's image URL points at (local files, uploads, cloud storage, plain paths)."""
    parsed = urllib.parse.urlparse(url)
    query = urllib.parse.parse_qs(parsed.query)
    path = query["d"][0] if "d" in query else urllib.parse.unquote(parsed.path)
    return Path(path).name


def _task_image_url(task: dict[str, Any]) -> str | None:
    data = task.get("data") or {}
    if isinstance(data.get("image"), str):
        return data["image"]
    return next((v for v in data.values() if isinstance(v, str) and Path(v.split("?")[0]).suffix), None)


def _newest_submitted(annotations: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, int]:
    """(the answer, how many submitted annotations there were)."""
    submitted = [a for a in annotations if not a.get("was_cancelled")]
    if not submitted:
        return None, 0
    newest = max(enumerate(submitted), key=lambda ia: (str(ia[1].get("updated_at") or ""), ia[0]))[1]
    return newest, len(submitted)


def config_classes(json_path: Path) -> list[str] | None:
    """Class order from a `label_config.xml` next to the export (as `dataset export` writes), if any."""
    import xml.etree.ElementTree as ET

    cfg = json_path.parent / "label_config.xml"
    if not cfg.is_file():
        return None
    try:
        root = ET.parse(cfg).getroot()
    except ET.ParseError:
        return None
    return [str(label.get("value")) for label in root.iter("Label") if label.get("value")]


def parse(src: Path, report: Any, images_dir: Path | None) -> tuple[list[Any], list[str]]:
    """Label Studio JSON export -> the importer's raw records and the class names found."""
    json_path = src if src.is_file() else _single_json(src)
    try:
        tasks = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrainingInputError(f"{json_path}: not valid JSON ({exc})") from exc
    if isinstance(tasks, dict):  # a single task
        tasks = [tasks]
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise TrainingInputError(f"{json_path}: expected Label Studio's JSON export (a list of tasks)")
    index = index_images(images_dir or json_path.parent)
    items: list[RawImage] = []
    names: list[str] = []
    for n, task in enumerate(tasks):
        where = f"{json_path.name} task {task.get('id', n)}"
        url = _task_image_url(task)
        if url is None:
            report.add(where, "bad_annotation", "task has no image in 'data'", "task skipped")
            continue
        name = image_name_from_url(url)
        found = index.get(name.lower()) or index.get(_UPLOAD_PREFIX.sub("", name).lower()) or []
        if not found:
            report.add(where, "missing_image", f"image {name!r} ({url}) not found", "task skipped")
            continue
        answer, submitted = _newest_submitted(task.get("annotations") or task.get("completions") or [])
        if answer is None:
            report.add(
                found[0], "not_labelled", "no submitted annotation (predictions only)", "image skipped"
            )
            continue
        if submitted > 1:
            report.add(found[0], "several_annotations", f"{submitted} submitted", "the newest one used")
        boxes = []
        declared = None
        for region in answer.get("result") or []:
            if region.get("type") not in ("rectanglelabels", "rectangle"):
                continue  # choices, text areas...: not boxes
            value = region.get("value") or {}
            labels = value.get("rectanglelabels") or value.get("labels") or []
            try:
                x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
            except (KeyError, TypeError, ValueError):
                report.add(
                    found[0], "bad_box", f"region {region.get('id')} has no x/y/width/height", "box dropped"
                )
                continue
            if not labels:
                report.add(found[0], "bad_box", f"region {region.get('id')} has no label", "box dropped")
                continue
            if region.get("original_width") and region.get("original_height"):
                declared = (int(region["original_width"]), int(region["original_height"]))
            xyxy = (x / 100, y / 100, (x + w) / 100, (y + h) / 100)
            angle = float(value.get("rotation") or 0)
            if angle % 360:
                xyxy = _rotated_envelope(x, y, w, h, angle, declared)
                report.add(
                    found[0],
                    "rotated_box",
                    f"{labels[0]} rotated {angle:g} deg",
                    "axis-aligned envelope used",
                )
            boxes.append(RawBox(str(labels[0]), xyxy, normalised=True))
            if str(labels[0]) not in names:
                names.append(str(labels[0]))
        items.append(RawImage(found[0], json_path, boxes, declared))
    return items, config_classes(json_path) or sorted(names)


def _rotated_envelope(
    x: float, y: float, w: float, h: float, angle: float, size: tuple[int, int] | None
) -> tuple[float, float, float, float]:
    """Label Studio rotates about the top-left corner, in pixels: envelope as fractions of the image."""
    iw, ih = size or (100, 100)  # without the size, percent units on both axes (exact for square images)
    px, py, pw, ph = x * iw / 100, y * ih / 100, w * iw / 100, h * ih / 100
    a = math.radians(angle)
    corners = [(0, 0), (pw, 0), (pw, ph), (0, ph)]
    xs = [px + cx * math.cos(a) - cy * math.sin(a) for cx, cy in corners]
    ys = [py + cx * math.sin(a) + cy * math.cos(a) for cx, cy in corners]
    return min(xs) / iw, min(ys) / ih, max(xs) / iw, max(ys) / ih


def _single_json(folder: Path) -> Path:
    found = [p for p in sorted(folder.glob("*.json")) if p.name != "import_report.json"]
    if len(found) != 1:
        raise TrainingInputError(
            f"{folder}: expected one Label Studio .json export (found {len(found)}); pass the file itself"
        )
    return found[0]
