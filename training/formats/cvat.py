"""CVAT for images 1.1 (XML): the export in, an annotation file with labels or pre-annotations out.

One `annotations.xml`: `<meta>` with the task's (or project's) labels, then one `<image id name width
height>` per frame with its shapes. A box is `<box label xtl ytl xbr ybr occluded z_order source>` in
pixels (`rotation` in degrees when rotated). `source="manual"` is a person's box, `"auto"` a model's.

Import rules: every `<image>` is an answer (no shapes = a defect-free image); rotated boxes become their
axis-aligned envelope; polygons, polylines, points, masks, ellipses and tags are not boxes: reported and
left out. Export writes a person's labels as `manual` boxes, and the model's boxes as `auto` ones for
images without labels (CVAT has no separate place for predictions).
"""

from __future__ import annotations

import datetime as dt
import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.errors import TrainingInputError
from training.formats import BatchImage
from training.raw_labels import RawBox, RawImage, index_images

NON_BOX_SHAPES = ("polygon", "polyline", "points", "mask", "ellipse", "cuboid", "skeleton", "tag")
_PALETTE = ("#fa3253", "#33ddff", "#ffcc33", "#34d1b7", "#ff6037", "#b83df5", "#aaf0d1", "#ff007c")


def write_xml(batch: Sequence[BatchImage], classes: Sequence[str], dst: Path, task_name: str) -> Path:
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    meta = ET.SubElement(root, "meta")
    task = ET.SubElement(meta, "task")
    for key, value in (
        ("id", "0"),
        ("name", task_name),
        ("size", str(len(batch))),
        ("mode", "annotation"),
        ("overlap", "0"),
        ("bugtracker", ""),
        ("created", now),
        ("updated", now),
        ("subset", "default"),
        ("start_frame", "0"),
        ("stop_frame", str(max(0, len(batch) - 1))),
        ("frame_filter", ""),
    ):
        ET.SubElement(task, key).text = value
    labels = ET.SubElement(task, "labels")
    for i, name in enumerate(classes):
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "color").text = _PALETTE[i % len(_PALETTE)]
        ET.SubElement(label, "type").text = "rectangle"
        ET.SubElement(label, "attributes")
    ET.SubElement(meta, "dumped").text = now
    for i, item in enumerate(batch):
        image = ET.SubElement(
            root, "image", id=str(i), name=item.path.name, width=str(item.width), height=str(item.height)
        )
        boxes, source = (item.labels, "manual") if item.labelled else (item.predictions, "auto")
        for box in boxes:
            x1, y1, x2, y2 = box.xyxy
            ET.SubElement(
                image,
                "box",
                label=box.label,
                source=source,
                occluded="0",
                xtl=f"{x1:.2f}",
                ytl=f"{y1:.2f}",
                xbr=f"{x2:.2f}",
                ybr=f"{y2:.2f}",
                z_order="0",
            )
    ET.indent(root)
    dst.write_text('<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n")
    return dst


# ------------------------------------------------------------------------------------------ import
def _find_xml(src: Path) -> Path:
    if src.is_file():
        return src
    if (src / "annotations.xml").is_file():
        return src / "annotations.xml"
    found = sorted(src.glob("*.xml"))
    if len(found) != 1:
        raise TrainingInputError(
            f"{src}: expected CVAT's annotations.xml (found {len(found)} .xml files); pass the file itself"
        )
    return found[0]


def _meta_labels(root: ET.Element) -> list[str]:
    meta = root.find("meta")
    if meta is None:
        return []
    for owner in ("task", "project", "job"):
        node = meta.find(owner)
        if node is not None and node.find("labels") is not None:
            return [
                (lab.findtext("name") or "").strip() for lab in node.iter("label") if lab.findtext("name")
            ]
    return []


def _envelope(x1: float, y1: float, x2: float, y2: float, angle: float) -> tuple[float, float, float, float]:
    """CVAT rotates a box about its centre."""
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    a = math.radians(angle)
    ex = abs(hw * math.cos(a)) + abs(hh * math.sin(a))
    ey = abs(hw * math.sin(a)) + abs(hh * math.cos(a))
    return cx - ex, cy - ey, cx + ex, cy + ey


def parse(src: Path, report: Any, images_dir: Path | None) -> tuple[list[Any], list[str]]:
    """CVAT for images 1.1 XML -> the importer's raw records and the class names (the task's order)."""
    xml_path = _find_xml(src)
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise TrainingInputError(f"{xml_path}: XML cannot be parsed ({exc})") from exc
    if root.tag != "annotations":
        raise TrainingInputError(f"{xml_path}: not a CVAT export (root <{root.tag}>, expected <annotations>)")
    if root.find("track") is not None and root.find("image") is None:
        raise TrainingInputError(f"{xml_path}: a 'CVAT for video' export; export as 'CVAT for images 1.1'")
    version = (root.findtext("version") or "").strip()
    if version and version != "1.1":
        report.add(xml_path, "format_version", f"CVAT XML version {version}, read as 1.1", "imported")
    search = images_dir or xml_path.parent
    index = index_images(search)
    names = _meta_labels(root)
    found_names: list[str] = []
    items: list[RawImage] = []
    for image in root.iter("image"):
        name = image.get("name") or ""
        direct = search / name
        candidates = [direct] if name and direct.is_file() else index.get(Path(name).name.lower(), [])
        where = f"{xml_path.name} image {name!r}"
        if not candidates:
            report.add(where, "missing_image", f"not found under {search}", "image skipped")
            continue
        path = candidates[0]
        try:
            declared = (int(float(image.get("width") or 0)), int(float(image.get("height") or 0)))
        except ValueError:
            declared = None
        boxes = []
        for shape in image:
            if shape.tag in NON_BOX_SHAPES:
                report.add(path, "unsupported_shape", f"{shape.tag} {shape.get('label')!r}", "shape dropped")
                continue
            if shape.tag != "box":
                continue
            label = (shape.get("label") or "").strip()
            try:
                x1, y1, x2, y2 = (float(shape.get(k)) for k in ("xtl", "ytl", "xbr", "ybr"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                report.add(path, "bad_box", f"box {label!r} has no valid xtl/ytl/xbr/ybr", "box dropped")
                continue
            angle = float(shape.get("rotation") or 0)
            if angle % 360:
                x1, y1, x2, y2 = _envelope(x1, y1, x2, y2, angle)
                report.add(
                    path, "rotated_box", f"{label} rotated {angle:g} deg", "axis-aligned envelope used"
                )
            boxes.append(RawBox(label, (x1, y1, x2, y2)))
            if label not in found_names:
                found_names.append(label)
        items.append(RawImage(path, xml_path, boxes, declared))
    return items, names or sorted(found_names)
