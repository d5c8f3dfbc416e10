"""Import labelled images (Pascal VOC XML, COCO JSON, YOLO txt) into one checked Ultralytics layout.

Canonical layout written by `import_dataset` (DST)::

    DST/images/<stem>.<ext>      image files (copied byte for byte when readable)
    DST/labels/<stem>.txt        YOLO boxes: class cx cy w h (normalised)
    DST/data.yaml                path, train/val/test lists, names
    DST/import_report.json/.txt  every skipped file and every corrected box, with its reason
    DST/train.txt, val.txt, test.txt   image lists: the source's own split when it has one (a YOLO
                                 source's images/train|val|test or train|valid|test/images), else
                                 written by `split_dataset`

Nothing is dropped silently: unreadable or missing images, labels without images, boxes outside the
image (clipped), zero-area boxes, unknown classes and duplicate images (same decoded pixels) all go
into the report with the file they came from.

Example:
    >>> import tempfile
    >>> from training.synth import write_dataset
    >>> src = Path(tempfile.mkdtemp())
    >>> _ = write_dataset(src, n=8, size=(64, 64), seed=0)
    >>> report = import_dataset(src, Path(tempfile.mkdtemp()) / "canon", fmt="yolo")
    >>> report.images_imported, report.skipped_images
    (8, 0)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import yaml

from contract.yolo_labels import clip_box, label_text, yolo_line
from training.errors import TrainingInputError
from training.raw_labels import IMAGE_SUFFIXES, RawBox, RawImage, index_images

Format = Literal["voc", "coco", "yolo", "label-studio", "cvat"]
_ONE_FILE_FORMATS = ("coco", "label-studio", "cvat")  # all labels in one file: reports name the image
SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------------------------- report
@dataclass
class ImportIssue:
    """One thing the importer did not take as it was: which file, what was wrong, what we did."""

    file: str
    problem: str  # short machine-friendly kind, e.g. "box_clipped"
    detail: str
    action: str  # "image skipped", "box dropped", "box clipped", "imported as background", ...


@dataclass
class ImportReport:
    source: str
    destination: str
    format: str
    classes: list[str] = field(default_factory=list)
    images_imported: int = 0
    boxes_imported: int = 0
    boxes_per_class: dict[str, int] = field(default_factory=dict)
    issues: list[ImportIssue] = field(default_factory=list)
    #: images per split kept from the source (empty: the source had no split; run `dataset split`)
    source_split: dict[str, int] = field(default_factory=dict)

    def add(self, file: str | Path, problem: str, detail: str, action: str) -> None:
        self.issues.append(ImportIssue(str(file), problem, detail, action))

    @property
    def skipped_images(self) -> int:
        return sum(1 for i in self.issues if i.action == "image skipped")

    def counts(self) -> dict[str, int]:
        return dict(Counter(i.problem for i in self.issues))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["skipped_images"] = self.skipped_images
        d["issue_counts"] = self.counts()
        return d

    def to_text(self) -> str:
        lines = [
            f"Imported {self.images_imported} images and {self.boxes_imported} boxes "
            f"from {self.source} ({self.format}) into {self.destination}.",
            "Classes: " + ", ".join(f"{c} ({self.boxes_per_class.get(c, 0)} boxes)" for c in self.classes),
        ]
        if self.source_split:
            kept = ", ".join(f"{k} {v}" for k, v in self.source_split.items())
            lines.append(f"Kept the source's split: {kept} (`dataset split` replaces it).")
            if not self.source_split.get("val"):
                lines.append("WARNING: the source has no val split; run `dataset split` before training.")
        else:
            lines.append("The source has no split: run `dataset split` before training.")
        if not self.issues:
            lines.append("No problems found.")
        else:
            lines.append(
                f"{len(self.issues)} problem(s): " + ", ".join(f"{k} x{v}" for k, v in self.counts().items())
            )
            lines += [f"  {i.file}: {i.detail} -> {i.action}" for i in self.issues]
        return "\n".join(lines)

    def write(self, dst: Path) -> None:
        (dst / "import_report.json").write_text(json.dumps(self.to_dict(), indent=2))
        (dst / "import_report.txt").write_text(self.to_text() + "\n")


# ----------------------------------------------------------------------------------------------- parsing
#: folder names that mark a source's split (Ultralytics, Roboflow, CVAT exports)
_SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def _source_split(src: Path, image: Path) -> str | None:
    """`images/train/a.jpg` or `train/images/a.jpg` under `src` -> "train"; None without split folders."""
    try:
        parts = image.relative_to(src).parts[:-1]
    except ValueError:
        return None
    found = {_SPLIT_FOLDERS[p.lower()] for p in parts if p.lower() in _SPLIT_FOLDERS}
    return found.pop() if len(found) == 1 else None


def _parse_voc(src: Path, report: ImportReport) -> tuple[list[RawImage], list[str]]:
    xml_files = sorted(src.rglob("*.xml"))
    if not xml_files:
        raise TrainingInputError(f"{src}: no Pascal VOC .xml annotation files found")
    index = index_images(src)
    items: list[RawImage] = []
    names: list[str] = []
    matched: set[Path] = set()
    for xml_file in xml_files:
        try:
            root = ET.parse(xml_file).getroot()
        except ET.ParseError as exc:
            report.add(xml_file, "bad_annotation", f"XML cannot be parsed ({exc})", "label skipped")
            continue
        filename = (root.findtext("filename") or "").strip()
        candidates = index.get(Path(filename).name.lower(), []) if filename else []
        candidates = candidates or index.get("stem:" + xml_file.stem.lower(), [])
        # Prefer the image that sits in the sibling image folder of this XML (e.g. VOC JPEGImages).
        candidates = sorted(candidates, key=lambda p: (p.parent.parent != xml_file.parent.parent, str(p)))
        image = candidates[0] if candidates else None
        if image is not None:
            matched.add(image)
        size = root.find("size")
        declared = None
        if size is not None:
            try:
                declared = (int(float(size.findtext("width") or 0)), int(float(size.findtext("height") or 0)))
            except ValueError:
                declared = None
        boxes = []
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip()
            bnd = obj.find("bndbox")
            try:
                xyxy = tuple(float(bnd.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[union-attr,arg-type]
            except (AttributeError, TypeError, ValueError):
                report.add(xml_file, "bad_box", f"object {name!r} has no valid <bndbox>", "box dropped")
                continue
            boxes.append(RawBox(name, xyxy))  # type: ignore[arg-type]
            if name and name not in names:
                names.append(name)
        items.append(RawImage(image, xml_file, boxes, declared))
    for key, paths in index.items():
        if key.startswith("stem:"):
            continue
        for p in paths:
            if p not in matched:
                items.append(RawImage(p, None, []))
    return items, sorted(names)


def _find_coco_json(src: Path) -> Path:
    if src.is_file():
        return src
    found = sorted(src.glob("*.json")) or sorted(src.glob("annotations/*.json"))
    found = [p for p in found if p.name != "import_report.json"]
    if len(found) != 1:
        raise TrainingInputError(
            f"{src}: expected one COCO .json file (found {len(found)}); pass the JSON file itself"
        )
    return found[0]


def _parse_coco(
    src: Path, report: ImportReport, images_dir: Path | None
) -> tuple[list[RawImage], list[str]]:
    json_path = _find_coco_json(src)
    try:
        coco = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrainingInputError(f"{json_path}: not valid JSON ({exc})") from exc
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise TrainingInputError(f"{json_path}: missing COCO key {key!r}")
    categories = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
    roots = (
        [images_dir]
        if images_dir
        else [json_path.parent, json_path.parent / "images", json_path.parent.parent / "images"]
    )
    by_id: dict[int, RawImage] = {}
    for img in coco["images"]:
        rel = str(img.get("file_name", ""))
        path = next((r / rel for r in roots if r is not None and (r / rel).is_file()), None)
        if path is None:
            report.add(
                rel or f"image id {img.get('id')}",
                "missing_image",
                f"listed in {json_path.name} but not found under {', '.join(str(r) for r in roots)}",
                "image skipped",
            )
        declared = (int(img.get("width", 0)), int(img.get("height", 0)))
        by_id[int(img["id"])] = RawImage(path, json_path, [], declared)
    for ann in coco["annotations"]:
        image_id = int(ann.get("image_id", -1))
        where = f"{json_path.name} annotation id {ann.get('id')}"
        if image_id not in by_id:
            report.add(
                where,
                "label_without_image",
                f"refers to image id {image_id}, which is not in 'images'",
                "box dropped",
            )
            continue
        cat = int(ann.get("category_id", -1))
        name: str | int = categories.get(cat, f"category id {cat}")
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            report.add(where, "bad_box", "no valid 'bbox' [x, y, w, h]", "box dropped")
            continue
        by_id[image_id].boxes.append(RawBox(name, (x, y, x + w, y + h)))
    items = list(by_id.values())
    for item in items:
        if item.image is None and item.boxes:
            report.add(
                item.label_file or json_path,
                "label_without_image",
                f"{len(item.boxes)} box(es) for a missing image",
                "boxes dropped",
            )
    return [i for i in items if i.image is not None], [categories[k] for k in sorted(categories)]


def _yolo_names(src: Path) -> list[str]:
    for candidate in (src / "data.yaml", src / "dataset.yaml"):
        if candidate.is_file():
            names = (yaml.safe_load(candidate.read_text()) or {}).get("names")
            if isinstance(names, dict):
                return [str(names[k]) for k in sorted(names, key=int)]
            if isinstance(names, list):
                return [str(n) for n in names]
    if (src / "classes.txt").is_file():
        return [n.strip() for n in (src / "classes.txt").read_text().splitlines() if n.strip()]
    raise TrainingInputError(f"{src}: YOLO dataset needs class names in data.yaml ('names') or classes.txt")


def _parse_yolo(src: Path, report: ImportReport) -> tuple[list[RawImage], list[str]]:
    names = _yolo_names(src)
    images = sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    labels = {p.resolve() for p in src.rglob("*.txt") if "labels" in p.parts}
    items = []
    for image in images:
        parts = list(image.parts)
        idx = len(parts) - 1 - parts[::-1].index("images") if "images" in parts else None
        label = (
            Path(*parts[:idx], "labels", *parts[idx + 1 :]).with_suffix(".txt")
            if idx is not None
            else (image.with_suffix(".txt"))
        )
        boxes: list[RawBox] = []
        if label.is_file():
            labels.discard(label.resolve())
            for n, line in enumerate(label.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                fields = line.split()
                try:
                    cid = int(float(fields[0]))
                    cx, cy, w, h = (float(v) for v in fields[1:5])
                except (ValueError, IndexError):
                    report.add(
                        f"{label}:{n}", "bad_box", f"line {line!r} is not 'class cx cy w h'", "box dropped"
                    )
                    continue
                if len(fields) > 5:
                    report.add(
                        f"{label}:{n}",
                        "polygon_label",
                        "more than 5 values (segment?); using the box of the first 4 numbers",
                        "box kept",
                    )
                label_name: str | int = names[cid] if 0 <= cid < len(names) else cid
                boxes.append(
                    RawBox(label_name, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), normalised=True)
                )
        items.append(
            RawImage(image, label if label.is_file() else None, boxes, split=_source_split(src, image))
        )
    for orphan in sorted(labels):
        report.add(
            orphan, "label_without_image", "label file has no image with the same name", "label skipped"
        )
    return items, names


# ----------------------------------------------------------------------------------------------- import
def _read_image(path: Path) -> np.ndarray | None:
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        return None
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


def _pixel_hash(img: np.ndarray) -> str:
    return hashlib.sha256(str(img.shape).encode() + np.ascontiguousarray(img).tobytes()).hexdigest()


def import_dataset(
    src: str | Path,
    dst: str | Path,
    fmt: Format,
    classes: Sequence[str] | None = None,
    images_dir: str | Path | None = None,
    overwrite: bool = False,
) -> ImportReport:
    """Convert a VOC/COCO/YOLO dataset at `src` into the canonical layout at `dst`; returns the report.

    `classes` fixes the class list and order; boxes of any other class are dropped and reported.
    Without it, the classes are those the source declares (COCO categories, YOLO names) or, for VOC,
    every `<name>` found, sorted.
    """
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if fmt not in ("voc", "coco", "yolo", "label-studio", "cvat"):
        raise TrainingInputError(f"unknown format {fmt!r}: use voc, coco, yolo, label-studio or cvat")
    if not src.exists():
        raise TrainingInputError(f"source {src} does not exist")
    if dst.exists() and any(dst.iterdir()):
        if not overwrite:
            raise TrainingInputError(f"destination {dst} is not empty (use --overwrite to replace it)")
        shutil.rmtree(dst)
    report = ImportReport(source=str(src), destination=str(dst), format=fmt)
    if fmt == "voc":
        items, found = _parse_voc(src, report)
    elif fmt == "coco":
        items, found = _parse_coco(src, report, Path(images_dir) if images_dir else None)
    elif fmt in ("label-studio", "cvat"):  # labelling tools' exports: training/formats
        from training.formats import cvat, label_studio

        parser = label_studio.parse if fmt == "label-studio" else cvat.parse
        items, found = parser(src, report, Path(images_dir) if images_dir else None)
    else:
        items, found = _parse_yolo(src, report)
    names = list(classes) if classes else found
    if len(set(names)) != len(names):
        raise TrainingInputError(f"class list has duplicates: {names}")
    class_index = {n: i for i, n in enumerate(names)}
    report.classes = names
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "labels").mkdir(parents=True, exist_ok=True)
    seen_hashes: dict[str, Path] = {}
    split_lists: dict[str, list[str]] = defaultdict(list)  # the source's split, image by image
    used_stems: set[str] = set()
    per_class: Counter[str] = Counter()
    for item in sorted(items, key=lambda i: str(i.image or i.label_file)):
        if item.image is None:
            report.add(
                item.label_file or "?",
                "label_without_image",
                "no image file with this name was found",
                "label skipped",
            )
            continue
        img = _read_image(item.image)
        if img is None:
            report.add(
                item.image,
                "unreadable_image",
                "file cannot be decoded as an image (corrupt or empty)",
                "image skipped",
            )
            continue
        digest = _pixel_hash(img)
        if digest in seen_hashes:
            report.add(
                item.image, "duplicate_image", f"same pixels as {seen_hashes[digest]}", "image skipped"
            )
            continue
        seen_hashes[digest] = item.image
        h, w = img.shape[:2]
        # COCO keeps every label in one JSON: name the image, so the report says which one.
        where = item.image if fmt in _ONE_FILE_FORMATS else (item.label_file or item.image)
        if item.declared_size and all(item.declared_size) and item.declared_size != (w, h):
            report.add(
                where,
                "size_mismatch",
                f"annotation says {item.declared_size[0]}x{item.declared_size[1]}, image is {w}x{h}",
                "boxes checked against the real size",
            )
        lines = []
        for box in item.boxes:
            if isinstance(box.label, int) or box.label not in class_index:
                known = ", ".join(names)
                report.add(
                    where, "unknown_class", f"class {box.label!r} is not one of: {known}", "box dropped"
                )
                continue
            x1, y1, x2, y2 = box.xyxy
            if box.normalised:
                x1, x2, y1, y2 = x1 * w, x2 * w, y1 * h, y2 * h
            x1, x2 = sorted((x1, x2))
            y1, y2 = sorted((y1, y2))
            clipped = clip_box((x1, y1, x2, y2), w, h)
            if clipped is None:
                report.add(
                    where,
                    "zero_area_box",
                    f"{box.label} box ({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}) has "
                    f"no area inside the {w}x{h} image",
                    "box dropped",
                )
                continue
            cx1, cy1, cx2, cy2 = clipped
            if clipped != (x1, y1, x2, y2):
                report.add(
                    where,
                    "box_outside_image",
                    f"{box.label} box ({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}) "
                    f"extends outside the {w}x{h} image",
                    f"box clipped to ({cx1:.1f}, {cy1:.1f}, {cx2:.1f}, {cy2:.1f})",
                )
            lines.append(str(yolo_line(class_index[box.label], clipped, w, h)))
            per_class[box.label] += 1
        if item.label_file is None and fmt not in _ONE_FILE_FORMATS:
            report.add(
                item.image, "no_label", "image has no annotation file", "imported as defect-free image"
            )
        stem = item.image.stem
        n = 2
        while stem.lower() in used_stems:
            stem = f"{item.image.stem}_{n}"
            n += 1
        used_stems.add(stem.lower())
        suffix = item.image.suffix.lower()
        if suffix in (".jpg", ".jpeg", ".png", ".bmp"):
            shutil.copyfile(item.image, dst / "images" / f"{stem}{suffix}")
        else:  # re-encode formats some tools read poorly
            suffix = ".png"
            cv2.imwrite(str(dst / "images" / f"{stem}.png"), img)
        split_lists[item.split or ""].append(f"./images/{stem}{suffix}")
        (dst / "labels" / f"{stem}.txt").write_text(label_text(lines))
        report.images_imported += 1
        report.boxes_imported += len(lines)
    report.boxes_per_class = {n: per_class.get(n, 0) for n in names}
    if split_lists.get("train"):  # keep the source's split rather than flatten it
        for entry in split_lists.pop("", []):
            split_lists["train"].append(entry)
            report.add(entry, "no_source_split", "not in the source's train/val/test folders", "put in train")
        kept = [s for s in SPLITS if split_lists.get(s)]
        for split in kept:
            (dst / f"{split}.txt").write_text("\n".join(split_lists[split]) + "\n")
        report.source_split = {s: len(split_lists[s]) for s in kept}
        lists = {s: f"{s}.txt" for s in kept}
        write_data_yaml(dst, names, lists if "val" in lists else {**lists, "val": "train.txt"})
    else:
        write_data_yaml(dst, names)
    report.write(dst)
    return report


def train_val_overlap(data: str | Path) -> tuple[int, int]:
    """(validation images that are also training images, validation images) of a data.yaml.

    Right after an import without a split, train and val are the same images: a training "validated"
    on them reports what it memorised, not what it learnt."""
    train = {p.resolve() for p in split_images(data, "train")}
    val = [p.resolve() for p in split_images(data, "val")]
    return sum(1 for p in val if p in train), len(val)


def write_data_yaml(dst: Path, names: Sequence[str], splits: dict[str, str] | None = None) -> Path:
    """data.yaml for Ultralytics; before a split, train and val both point at every image."""
    splits = splits or {"train": "images", "val": "images"}
    data: dict[str, Any] = {"path": str(dst.resolve()), **splits, "names": dict(enumerate(names))}
    path = dst / "data.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ----------------------------------------------------------------------------------------------- loading
@dataclass
class LabelledImage:
    image: Path
    class_ids: np.ndarray  # (N,)
    boxes_norm: np.ndarray  # (N, 4) cx, cy, w, h normalised


def load_data_yaml(data: str | Path) -> tuple[Path, dict[str, Any]]:
    path = Path(data).expanduser()
    if path.is_dir():
        path = path / "data.yaml"
    if not path.is_file():
        raise TrainingInputError(
            f"dataset {data}: no data.yaml (make one with `edge-inspect dataset import`)"
        )
    cfg = yaml.safe_load(path.read_text())
    if not isinstance(cfg, dict) or "names" not in cfg:
        raise TrainingInputError(f"{path}: not a dataset description (needs 'names')")
    return path, cfg


def class_names(cfg: dict[str, Any]) -> dict[int, str]:
    names = cfg["names"]
    if isinstance(names, list):
        return dict(enumerate(str(n) for n in names))
    return {int(k): str(v) for k, v in names.items()}


def split_images(data: str | Path, split: str) -> list[Path]:
    """Image files of one split of a data.yaml (folder, list file or list of either)."""
    path, cfg = load_data_yaml(data)
    if split not in cfg or not cfg[split]:
        raise TrainingInputError(f"{path}: has no {split!r} split")
    root = Path(cfg.get("path") or path.parent)
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    entries = cfg[split] if isinstance(cfg[split], list) else [cfg[split]]
    images: list[Path] = []
    for entry in entries:
        p = root / str(entry)
        if p.is_dir():
            images += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file() and p.suffix == ".txt":
            for line in p.read_text().splitlines():
                line = line.strip()
                if line:
                    images.append((p.parent / line[2:]) if line.startswith("./") else Path(line))
        else:
            raise TrainingInputError(f"{path}: {split} entry {entry!r} ({p}) does not exist")
    return images


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last `images` folder in the path becomes `labels`, suffix `.txt`."""
    parts = list(image.parts)
    if "images" not in parts:
        return image.with_suffix(".txt")
    idx = len(parts) - 1 - parts[::-1].index("images")
    return Path(*parts[:idx], "labels", *parts[idx + 1 :]).with_suffix(".txt")


def read_labels(image: Path) -> LabelledImage:
    lp = label_path(image)
    rows = []
    if lp.is_file():
        for line in lp.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 5:
                rows.append([float(v) for v in fields[:5]])
    arr = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return LabelledImage(image, arr[:, 0].astype(np.int64), arr[:, 1:5])


def dataset_hash(data: str | Path, splits: Iterable[str] = SPLITS) -> str:
    """sha256 over every image's bytes and label text, per split (order-independent within a split)."""
    path, cfg = load_data_yaml(data)
    outer = hashlib.sha256()
    outer.update(json.dumps(class_names(cfg), sort_keys=True).encode())
    for split in splits:
        if not cfg.get(split):
            continue
        digests = []
        for image in split_images(path, split):
            h = hashlib.sha256(image.read_bytes())
            lp = label_path(image)
            h.update(lp.read_bytes() if lp.is_file() else b"")
            digests.append(h.hexdigest())
        outer.update(split.encode())
        for d in sorted(digests):
            outer.update(d.encode())
    return outer.hexdigest()


# ----------------------------------------------------------------------------------------------- split
@dataclass
class SplitResult:
    counts: dict[str, int]  # images per split
    class_images: dict[str, dict[str, int]]  # split -> class name -> images containing it
    warnings: list[str]
    data_yaml: Path


def split_dataset(data: str | Path, val: float = 0.2, test: float = 0.1, seed: int = 0) -> SplitResult:
    """Deterministic, stratified split of an imported dataset into train/val/test list files.

    Images are grouped by the rarest class they contain (defect-free images in their own group); each
    group is shuffled with `seed` and cut by the fractions, so each class lands in each part in
    proportion. A class that would still be missing from a part gets one of its images moved there
    from train when train has more than one. Same files + same seed => same split, on any machine.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise TrainingInputError(
            f"--val {val} and --test {test} must be fractions that add up to less than 1"
        )
    path, cfg = load_data_yaml(data)
    root = path.parent
    names = class_names(cfg)
    images = sorted((root / "images").iterdir()) if (root / "images").is_dir() else []
    images = [p for p in images if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise TrainingInputError(f"{root / 'images'}: no images to split (run `dataset import` first)")
    labels = {p: set(read_labels(p).class_ids.tolist()) for p in images}
    frequency = Counter(c for cs in labels.values() for c in cs)
    groups: dict[int, list[Path]] = defaultdict(list)
    for p in images:
        cs = labels[p]
        groups[min(cs, key=lambda c: (frequency[c], c)) if cs else -1].append(p)
    rng = np.random.default_rng(seed)
    assignment: dict[Path, str] = {}
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda p: p.name)
        order = rng.permutation(len(members))
        n = len(members)
        n_val, n_test = round(n * val), round(n * test)
        if val > 0 and n_val == 0 and n >= 3:
            n_val = 1
        if test > 0 and n_test == 0 and n >= 3:
            n_test = 1
        for rank, i in enumerate(order):
            assignment[members[i]] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    wanted = [s for s, f in (("train", 1.0), ("val", val), ("test", test)) if f > 0]
    warnings = []
    for c in sorted(frequency):
        for split in wanted:
            if any(assignment[p] == split and c in labels[p] for p in images):
                continue
            donors = sorted(
                (p for p in images if assignment[p] == "train" and c in labels[p]), key=lambda p: p.name
            )
            if len(donors) > 1:
                assignment[donors[int(rng.integers(len(donors)))]] = split
            else:
                warnings.append(
                    f"class {names.get(c, c)!r} has too few images ({frequency[c]}) to appear in {split}"
                )
    counts = {s: 0 for s in wanted}
    class_images: dict[str, dict[str, int]] = {s: dict.fromkeys(names.values(), 0) for s in wanted}
    lists: dict[str, list[str]] = {s: [] for s in wanted}
    for p in images:
        s = assignment[p]
        counts[s] += 1
        lists[s].append(f"./images/{p.name}")
        for c in labels[p]:
            class_images[s][names.get(c, str(c))] += 1
    for s in wanted:
        (root / f"{s}.txt").write_text("\n".join(lists[s]) + "\n")
    data_yaml = write_data_yaml(root, [names[k] for k in sorted(names)], {s: f"{s}.txt" for s in wanted})
    (root / "split.json").write_text(
        json.dumps(
            {
                "val": val,
                "test": test,
                "seed": seed,
                "counts": counts,
                "class_images": class_images,
                "warnings": warnings,
            },
            indent=2,
        )
    )
    return SplitResult(counts, class_images, warnings, data_yaml)


# ----------------------------------------------------------------------------------------------- validate
@dataclass
class ValidationReport:
    """`dataset validate`: what a training would read, checked; errors make the command exit 1."""

    data_yaml: Path
    images: dict[str, int] = field(default_factory=dict)  # per split
    boxes: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        lines = [f"{self.data_yaml}:"]
        lines += [f"  {s:<6} {self.images[s]} images, {self.boxes.get(s, 0)} boxes" for s in self.images]
        lines += [f"  ERROR {e}" for e in self.errors] + [f"  WARNING {w}" for w in self.warnings]
        lines.append("  OK" if not self.errors else f"  {len(self.errors)} error(s)")
        return "\n".join(lines)


def validate_dataset(data: str | Path, max_listed: int = 20) -> ValidationReport:
    """Check a dataset as training will read it: every split's images decode, every label line is
    `class cx cy w h` with a known class and a box inside the image, and val is not train."""
    path, cfg = load_data_yaml(data)
    report = ValidationReport(path)
    names = class_names(cfg)
    if not names:
        report.errors.append("data.yaml has no class names (`names`)")
    problems: list[str] = []
    for split in SPLITS:
        if not cfg.get(split):
            if split in ("train", "val"):
                report.errors.append(f"no {split!r} split in data.yaml")
            continue
        images = split_images(path, split)
        report.images[split] = len(images)
        boxes = 0
        unlabelled = 0
        for image in images:
            if _read_image(image) is None:
                problems.append(f"{image}: not a readable image")
            lp = label_path(image)
            if not lp.is_file():
                unlabelled += 1
                continue
            for n, line in enumerate(lp.read_text(errors="replace").splitlines(), 1):
                fields = line.split()
                if not fields:
                    continue
                try:
                    cid = int(fields[0])
                    cx, cy, w, h = (float(v) for v in fields[1:5])
                except (ValueError, IndexError):
                    problems.append(f"{lp}:{n}: {line!r} is not 'class cx cy w h'")
                    continue
                if cid not in names:
                    problems.append(f"{lp}:{n}: class {cid} is not in names (0..{len(names) - 1})")
                if w <= 0 or h <= 0 or not all(0 <= v <= 1 for v in (cx, cy, w, h)):
                    problems.append(f"{lp}:{n}: box {cx} {cy} {w} {h} is not inside the image (0-1)")
                boxes += 1
        report.boxes[split] = boxes
        if unlabelled:
            report.warnings.append(f"{split}: {unlabelled} image(s) without labels (taken as defect-free)")
    report.errors += problems[:max_listed]
    if len(problems) > max_listed:
        report.errors.append(f"... and {len(problems) - max_listed} more")
    if report.images.get("val"):
        overlap, n_val = train_val_overlap(path)
        if overlap:
            report.warnings.append(
                f"{overlap} of the {n_val} val images are train images: run `edge-inspect dataset split`"
            )
    return report
