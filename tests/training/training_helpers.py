"""Helpers and fixtures for the training tests: small labelled datasets in VOC, COCO and YOLO form,
made by our own synthetic generator, each with problems planted on purpose (missing image, corrupt
image, box outside the image, zero-area box, unknown class, duplicate image)."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.synth import CLASSES, make_sample

SIZE = (64, 80)  # h, w: not square, so x/y mix-ups show
N_GOOD = 12
NEU_DET = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "neu-det"


@dataclass
class Sample:
    stem: str
    image: np.ndarray
    boxes: list[tuple[str, float, float, float, float]]  # class name, x1, y1, x2, y2 (pixels)


def good_samples(n: int = N_GOOD, seed: int = 5) -> list[Sample]:
    """`n` images, each with at least one defect, and every class present at least 3 times."""
    rng = np.random.default_rng(seed)
    out: list[Sample] = []
    i = 0
    while len(out) < n:
        img, boxes = make_sample(rng, SIZE, max_defects=2, ok_probability=0.0)
        if not boxes:
            continue
        wanted = CLASSES[len(out) % len(CLASSES)]  # plant one box of a chosen class so all classes appear
        boxes = [b for b in boxes if CLASSES[b[0]] != wanted]
        boxes.append((CLASSES.index(wanted), 10, 12, 30, 28))
        out.append(Sample(f"img_{i:03d}", img, [(CLASSES[c], x1, y1, x2, y2) for c, x1, y1, x2, y2 in boxes]))
        i += 1
    return out


def _voc_xml(filename: str, w: int, h: int, boxes: list[tuple[str, float, float, float, float]]) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for k, v in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(size, k).text = str(v)
    for name, x1, y1, x2, y2 in boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        bnd = ET.SubElement(obj, "bndbox")
        for k, v in (("xmin", x1), ("ymin", y1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(bnd, k).text = str(v)
    return ET.tostring(root, encoding="unicode")


@dataclass
class Planted:
    """What a broken fixture contains on purpose; tests check the import report names each one."""

    root: Path
    good_images: int  # images that must be imported
    source_images: int  # image files in the source (including corrupt/duplicate ones)
    expected_problems: dict[str, str]  # problem kind -> file name fragment that must be reported with it


def _broken_extras(samples: list[Sample]) -> tuple[list[Sample], bytes]:
    """Extra samples with problems: box outside, zero-area box, unknown class (on good images)."""
    s0, s1, s2 = samples[0], samples[1], samples[2]
    h, w = SIZE
    s0.boxes.append(("scratch", w - 10, h - 10, w + 15, h + 5))  # outside: must be clipped
    s1.boxes.append(("pit", 20, 20, 20, 35))  # zero width: must be dropped
    s2.boxes.append(("dent", 5, 5, 15, 15))  # unknown class: must be dropped
    return samples, b"this is not a jpeg"


@pytest.fixture
def voc_broken(tmp_path: Path) -> Planted:
    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    samples, garbage = _broken_extras(good_samples())
    h, w = SIZE
    for s in samples:
        cv2.imwrite(str(root / "JPEGImages" / f"{s.stem}.png"), s.image)
        (root / "Annotations" / f"{s.stem}.xml").write_text(_voc_xml(f"{s.stem}.png", w, h, s.boxes))
    (root / "JPEGImages" / "corrupt.jpg").write_bytes(garbage)
    (root / "Annotations" / "corrupt.xml").write_text(_voc_xml("corrupt.jpg", w, h, [("pit", 1, 1, 9, 9)]))
    (root / "Annotations" / "ghost.xml").write_text(_voc_xml("ghost.png", w, h, [("pit", 1, 1, 9, 9)]))
    shutil.copy(root / "JPEGImages" / "img_003.png", root / "JPEGImages" / "zz_copy_of_3.png")
    (root / "Annotations" / "zz_copy_of_3.xml").write_text(
        _voc_xml("zz_copy_of_3.png", w, h, samples[3].boxes)
    )
    return Planted(
        root,
        good_images=len(samples),
        source_images=len(samples) + 2,
        expected_problems={
            "box_outside_image": "img_000",
            "zero_area_box": "img_001",
            "unknown_class": "img_002",
            "unreadable_image": "corrupt.jpg",
            "label_without_image": "ghost.xml",
            "duplicate_image": "zz_copy_of_3.png",
        },
    )


@pytest.fixture
def coco_broken(tmp_path: Path) -> Planted:
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    samples, garbage = _broken_extras(good_samples())
    h, w = SIZE
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    cat_id = {n: i + 1 for i, n in enumerate(CLASSES)}
    images, annotations = [], []

    def add(file_name: str, boxes: list[tuple[str, float, float, float, float]]) -> None:
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        for name, x1, y1, x2, y2 in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat_id.get(name, 99),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "iscrowd": 0,
                }
            )

    for s in samples:
        cv2.imwrite(str(root / "images" / f"{s.stem}.jpg"), s.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        add(f"{s.stem}.jpg", s.boxes)
    (root / "images" / "corrupt.jpg").write_bytes(garbage)
    add("corrupt.jpg", [("pit", 1, 1, 9, 9)])
    add("ghost.jpg", [("pit", 1, 1, 9, 9)])
    shutil.copy(root / "images" / "img_003.jpg", root / "images" / "zz_copy_of_3.jpg")
    add("zz_copy_of_3.jpg", samples[3].boxes)
    annotations.append({"id": 999, "image_id": 12345, "category_id": 1, "bbox": [1, 1, 5, 5]})
    (root / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return Planted(
        root,
        good_images=len(samples),
        source_images=len(samples) + 2,
        expected_problems={
            "box_outside_image": "img_000",
            "zero_area_box": "img_001",
            "unknown_class": "img_002",  # category id 99: reported with the image's annotation file
            "unreadable_image": "corrupt.jpg",
            "missing_image": "ghost.jpg",
            "duplicate_image": "zz_copy_of_3.jpg",
            "label_without_image": "annotation id 999",
        },
    )


@pytest.fixture
def yolo_broken(tmp_path: Path) -> Planted:
    root = tmp_path / "yolo"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    samples, garbage = _broken_extras(good_samples())
    h, w = SIZE
    (root / "data.yaml").write_text("names:\n" + "".join(f"  {i}: {n}\n" for i, n in enumerate(CLASSES)))

    def label_text(boxes: list[tuple[str, float, float, float, float]]) -> str:
        rows = []
        for name, x1, y1, x2, y2 in boxes:
            cid = CLASSES.index(name) if name in CLASSES else 7  # unknown id
            rows.append(
                f"{cid} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
            )
        return "\n".join(rows) + "\n"

    for s in samples:
        cv2.imwrite(str(root / "images" / "train" / f"{s.stem}.png"), s.image)
        (root / "labels" / "train" / f"{s.stem}.txt").write_text(label_text(s.boxes))
    (root / "images" / "train" / "corrupt.jpg").write_bytes(garbage)
    (root / "labels" / "train" / "corrupt.txt").write_text("1 0.5 0.5 0.1 0.1\n")
    (root / "labels" / "train" / "ghost.txt").write_text("1 0.5 0.5 0.1 0.1\n")
    shutil.copy(root / "images" / "train" / "img_003.png", root / "images" / "train" / "zz_copy_of_3.png")
    (root / "labels" / "train" / "zz_copy_of_3.txt").write_text(label_text(samples[3].boxes))
    return Planted(
        root,
        good_images=len(samples),
        source_images=len(samples) + 2,
        expected_problems={
            "box_outside_image": "img_000",
            "zero_area_box": "img_001",
            "unknown_class": "img_002",
            "unreadable_image": "corrupt.jpg",
            "label_without_image": "ghost.txt",
            "duplicate_image": "zz_copy_of_3.png",
        },
    )


@pytest.fixture
def synth_yolo(tmp_path: Path) -> Path:
    """A clean imported+split dataset (canonical layout) of 24 tiny synthetic images."""
    from training.datasets import import_dataset, split_dataset
    from training.synth import write_dataset

    src = write_dataset(tmp_path / "raw", n=24, size=(64, 64), seed=3, ok_probability=0.2).parent
    import_dataset(src, tmp_path / "canon", fmt="yolo")
    split_dataset(tmp_path / "canon", val=0.25, test=0.0, seed=0)
    return tmp_path / "canon"
