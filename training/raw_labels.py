"""The importer's raw records: what a label source says about one image before it is checked and written.

Every source format's parser (VOC, COCO, YOLO in `training.datasets`; Label Studio and CVAT in
`training.formats`) turns its files into `RawImage`s of `RawBox`es, finding the images with
`index_images`; `training.datasets.import_dataset` then checks them and writes the canonical layout.

>>> RawImage(None, None, [RawBox("scratch", (1.0, 2.0, 3.0, 4.0))]).boxes[0].label
'scratch'
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class RawBox:
    label: str | int  # class name (VOC, COCO) or id (YOLO)
    xyxy: tuple[float, float, float, float]  # pixels, or normalised for YOLO until the size is known
    normalised: bool = False


@dataclass
class RawImage:
    image: Path | None  # None when the label's image could not be found
    label_file: Path | None
    boxes: list[RawBox]
    declared_size: tuple[int, int] | None = None  # (w, h) the annotation claims
    split: str | None = None  # the source's split (train/val/test) when its folders say so


def index_images(root: Path) -> dict[str, list[Path]]:
    """All images under root, keyed by lower-case file name and by lower-case stem."""
    index: dict[str, list[Path]] = defaultdict(list)
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            index[p.name.lower()].append(p)
            index["stem:" + p.stem.lower()].append(p)
    return index
