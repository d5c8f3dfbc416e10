"""Folders of good and defect images for anomaly training and evaluation, read as the contract feeds a model.

Layouts accepted:

- a plain folder of good images (training), walked recursively;
- the MVTec AD layout: `train/good/`, `test/good/`, `test/<defect kind>/`, masks in
  `ground_truth/<defect kind>/<stem>_mask.png` (a defect image without a mask counts for image metrics only);
- a folder of defect images with masks beside them (`<stem>_mask.png`) or in a masks folder.

Images are RGB uint8 RESIZED to the model's H x W (no letterbox; greyscale becomes three equal channels), as
the contract says the runtime does. An unreadable file is reported and skipped.

Example:
    >>> import tempfile, cv2, numpy as np
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = cv2.imwrite(str(root / "a.png"), np.zeros((10, 20), np.uint8))
    >>> read_rgb(root / "a.png", (8, 16)).shape
    (8, 16, 3)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from training.errors import TrainingInputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIX = "_mask"
MASK_COVER = (
    0.25  # a model-resolution pixel is defect when a quarter of it was (thin cracks survive resizing)
)


def list_images(folder: str | Path) -> list[Path]:
    """Images under `folder` (recursive, sorted), masks (`*_mask.*`) left out."""
    root = Path(folder)
    if not root.is_dir():
        raise TrainingInputError(f"image folder {root} does not exist")
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith(MASK_SUFFIX) and p.is_file()
    )


def read_rgb(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB resized to `size` = (H, W); raises TrainingInputError for an unreadable file."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise TrainingInputError(f"{path}: not a readable image")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    h, w = size
    if img.shape[:2] != (h, w):  # as vision.anomaly resizes at run time: area when shrinking, else bilinear
        smaller = img.shape[0] * img.shape[1] > h * w
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if smaller else cv2.INTER_LINEAR)
    return img


def read_mask(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool at model resolution: any non-zero source pixel is defect (MVTec masks are 0/255)."""
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise TrainingInputError(f"{path}: not a readable mask")
    h, w = size
    cover = cv2.resize((m > 0).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    return cover >= MASK_COVER


def read_many(paths: list[Path], size: tuple[int, int]) -> tuple[list[Path], np.ndarray]:
    """The readable ones of `paths` as one (N, H, W, 3) array; each unreadable file is logged and skipped."""
    kept, images = [], []
    for p in paths:
        try:
            images.append(read_rgb(p, size))
            kept.append(p)
        except TrainingInputError as exc:
            log.warning("skipped: %s", exc)
    h, w = size
    return kept, (np.stack(images) if images else np.zeros((0, h, w, 3), np.uint8))


def find_mask(image: Path, masks_dir: Path | None) -> Path | None:
    """`<stem>_mask.png` (any image suffix) in `masks_dir` or beside the image; else the same name in
    `masks_dir`."""
    for folder in [d for d in (masks_dir, image.parent) if d is not None]:
        for suffix in (".png", *IMAGE_SUFFIXES):
            candidate = folder / f"{image.stem}{MASK_SUFFIX}{suffix}"
            if candidate.is_file():
                return candidate
    if masks_dir is not None and (masks_dir / image.name).is_file():
        return masks_dir / image.name
    return None


@dataclass
class EvalSet:
    """Good images and defect images (each with its mask or None) to measure a model on."""

    good: list[Path] = field(default_factory=list)
    defects: list[Path] = field(default_factory=list)
    masks: list[Path | None] = field(default_factory=list)
    source: str = ""
    spec: dict[str, str | None] = field(default_factory=dict)  # how to find it again (`eval_set_from_spec`)

    @property
    def has_masks(self) -> bool:
        return any(m is not None for m in self.masks)


def is_mvtec(root: Path) -> bool:
    return (root / "train" / "good").is_dir() or (root / "test").is_dir()


def training_folder(path: str | Path) -> Path:
    """The good images to train on: `path` itself, or `path/train/good` in the MVTec layout."""
    root = Path(path)
    return root / "train" / "good" if (root / "train" / "good").is_dir() else root


def mvtec_eval_set(root: str | Path) -> EvalSet:
    """`test/good` and every other `test/<kind>` with `ground_truth/<kind>/<stem>_mask.png`."""
    root = Path(root)
    test = root / "test"
    if not test.is_dir():
        raise TrainingInputError(f"{root}: no test/ folder (MVTec layout: test/good, test/<defect>)")
    es = EvalSet(source=str(root), spec={"root": str(root.resolve())})
    for kind in sorted(p for p in test.iterdir() if p.is_dir()):
        if kind.name == "good":
            es.good += list_images(kind)
            continue
        for img in list_images(kind):
            es.defects.append(img)
            es.masks.append(find_mask(img, root / "ground_truth" / kind.name))
    return es


def folder_eval_set(good: Path | None, defects: Path | None, masks: Path | None) -> EvalSet:
    spec = {
        k: str(Path(v).resolve()) if v else None
        for k, v in (("good", good), ("defects", defects), ("masks", masks))
    }
    es = EvalSet(source=f"good={good} defects={defects}", spec=spec)
    if good is not None:
        es.good = list_images(good)
    if defects is not None:
        es.defects = list_images(defects)
        es.masks = [find_mask(p, masks) for p in es.defects]
    return es


def is_reviews_folder(root: Path) -> bool:
    """The layout `edge-inspect dataset anomaly-from-reviews` writes: good/ and ng/."""
    return (root / "ng").is_dir() or (root / "good").is_dir()


def eval_set_from_path(root: str | Path) -> EvalSet:
    """An MVTec root (test/good, test/<defect>) or a reviews folder (good/, ng/)."""
    root = Path(root)
    if (root / "test").is_dir():
        return mvtec_eval_set(root)
    if is_reviews_folder(root):
        good, ng = root / "good", root / "ng"
        return folder_eval_set(good if good.is_dir() else None, ng if ng.is_dir() else None, None)
    raise TrainingInputError(
        f"{root}: not an evaluation set (MVTec layout test/good + test/<defect>, or reviews good/ + ng/)"
    )


def eval_set_from_spec(spec: dict[str, str | None] | str) -> EvalSet:
    """The evaluation set a model card names (`dataset.eval`), or a folder given as a path."""
    if isinstance(spec, str):
        return eval_set_from_path(spec)
    if spec.get("root"):
        return mvtec_eval_set(str(spec["root"]))
    good, defects, masks = (
        Path(v) if v else None for v in (spec.get("good"), spec.get("defects"), spec.get("masks"))
    )
    if good is None and defects is None:
        raise TrainingInputError(f"evaluation set {spec}: names no images")
    return folder_eval_set(good, defects, masks)


def split_held_out(paths: list[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """(train, held out): a seeded shuffle; at least one image each side once there are 5 or more."""
    if not 0 <= fraction < 1:
        raise TrainingInputError(f"held-out fraction must be in [0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(paths))
    n_out = round(len(paths) * fraction)
    if fraction > 0 and len(paths) >= 5:
        n_out = max(1, n_out)
    held = sorted(paths[i] for i in order[:n_out])
    train = sorted(paths[i] for i in order[n_out:])
    return train, held


def split_run_images(
    good: str | Path, held_out: float, seed: int, run: Path
) -> tuple[list[Path], list[Path]]:
    """(train, held out) good images of a training run, the held-out list written to `run/held_out.txt` (the
    operating point is set on them); at least 2 good images or a TrainingInputError."""
    all_good = list_images(training_folder(good))
    if len(all_good) < 2:
        raise TrainingInputError(f"{good}: need at least 2 good images, found {len(all_good)}")
    train, held = split_held_out(all_good, held_out, seed)
    (run / "held_out.txt").write_text("".join(f"{p}\n" for p in held))
    return train, held
