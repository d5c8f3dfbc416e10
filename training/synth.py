"""Synthetic defect generator: textured surfaces with scratches, pits, cracks and stains, exact boxes.

For cold starts, for the demo line's images and model, and for tests. Needs only numpy and OpenCV.

Example:
    >>> import numpy as np
    >>> img, boxes = make_sample(np.random.default_rng(0), size=(96, 128))
    >>> img.shape, img.dtype
    ((96, 128, 3), dtype('uint8'))
    >>> all(0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 96 for _, x1, y1, x2, y2 in boxes)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import yaml

CLASSES: tuple[str, ...] = ("scratch", "pit", "crack", "stain")
SURFACES: tuple[str, ...] = ("metal", "plastic", "fabric")

Box = tuple[int, int, int, int, int]  # class_id, x1, y1, x2, y2 (pixels, exclusive end)


def surface(rng: np.random.Generator, h: int, w: int, kind: str | None = None) -> np.ndarray:
    """A plausible textured surface (BGR uint8)."""
    kind = kind or SURFACES[int(rng.integers(len(SURFACES)))]
    base = float(rng.uniform(90, 190))
    if kind == "metal":  # brushed: noise stretched along one axis
        noise = rng.normal(0, 1, (h, max(4, w // 16))).astype(np.float32)
        tex = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR) * 10
        tex += rng.normal(0, 3, (h, w)).astype(np.float32)
        tint = np.array([1.0, 1.0, 1.02])
    elif kind == "plastic":  # smooth with a soft gradient
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        tex = (xx / max(w, 1) - 0.5) * rng.uniform(-30, 30) + (yy / max(h, 1) - 0.5) * rng.uniform(-30, 30)
        tex += rng.normal(0, 2, (h, w)).astype(np.float32)
        tint = rng.uniform(0.8, 1.2, 3)
    else:  # fabric: woven grid
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        period = rng.uniform(3, 7)
        tex = 8 * np.sin(xx * 2 * np.pi / period) * np.sin(yy * 2 * np.pi / period)
        tex += rng.normal(0, 4, (h, w)).astype(np.float32)
        tint = rng.uniform(0.7, 1.3, 3)
    grey = np.clip(base + tex, 0, 255)
    return np.clip(grey[..., None] * tint[None, None, :], 0, 255).astype(np.uint8)


def _box_from_mask(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _draw_defect(
    rng: np.random.Generator, img: np.ndarray, class_id: int
) -> tuple[int, int, int, int] | None:
    h, w = img.shape[:2]
    s = min(h, w)
    mask = np.zeros((h, w), np.uint8)
    dark = bool(rng.random() < 0.7)
    if CLASSES[class_id] == "scratch":
        length = rng.uniform(0.25, 0.6) * s
        angle = rng.uniform(0, np.pi)
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        p1 = (int(cx - dx), int(cy - dy))
        p2 = (int(cx + dx), int(cy + dy))
        cv2.line(mask, p1, p2, 255, max(1, int(s / 100)), cv2.LINE_AA)
    elif CLASSES[class_id] == "pit":
        r = max(2, int(rng.uniform(0.02, 0.05) * s))
        c = (int(rng.uniform(r, w - r)), int(rng.uniform(r, h - r)))
        cv2.ellipse(
            mask, c, (r, max(2, int(r * rng.uniform(0.6, 1.0)))), rng.uniform(0, 180), 0, 360, 255, -1
        )
        dark = True
    elif CLASSES[class_id] == "crack":
        x, y = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        angle = rng.uniform(0, 2 * np.pi)
        pts = [(int(x), int(y))]
        for _ in range(int(rng.integers(6, 12))):
            angle += rng.normal(0, 0.6)
            step = rng.uniform(0.03, 0.07) * s
            x = float(np.clip(x + np.cos(angle) * step, 1, w - 2))
            y = float(np.clip(y + np.sin(angle) * step, 1, h - 2))
            pts.append((int(x), int(y)))
        cv2.polylines(mask, [np.array(pts, np.int32)], False, 255, max(1, int(s / 150)) + 1)
        dark = True
    else:  # stain: a soft irregular blob
        r = int(rng.uniform(0.06, 0.14) * s)
        c = np.array([rng.uniform(r, w - r), rng.uniform(r, h - r)])
        angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
        radii = r * rng.uniform(0.6, 1.0, 9)
        poly = (c + np.stack([np.cos(angles) * radii, np.sin(angles) * radii], 1)).astype(np.int32)
        cv2.fillPoly(mask, [poly], 255)
    box = _box_from_mask(mask > 127)
    if box is None:
        return None
    alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (3, 3), 0)[..., None]
    if CLASSES[class_id] == "stain":
        alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.0, s / 80))[..., None] * 0.8
        colour = rng.uniform(20, 120, 3)
    else:
        colour = np.full(3, 25.0 if dark else 245.0)
    out = img.astype(np.float32) * (1 - alpha) + colour[None, None, :] * alpha
    img[:] = np.clip(out, 0, 255).astype(np.uint8)
    return box


def make_sample(
    rng: np.random.Generator,
    size: tuple[int, int] = (320, 320),
    max_defects: int = 3,
    ok_probability: float = 0.25,
    surface_kind: str | None = None,
) -> tuple[np.ndarray, list[Box]]:
    """One image (BGR) and its boxes. With `ok_probability` the part is defect-free."""
    h, w = size
    img = surface(rng, h, w, surface_kind)
    boxes: list[Box] = []
    if rng.random() >= ok_probability:
        for _ in range(int(rng.integers(1, max_defects + 1))):
            cid = int(rng.integers(len(CLASSES)))
            box = _draw_defect(rng, img, cid)
            if box is not None and box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
                boxes.append((cid, *box))
    return img, boxes


def yolo_label_lines(boxes: Sequence[Box], w: int, h: int) -> list[str]:
    return [
        f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
        for c, x1, y1, x2, y2 in boxes
    ]


def write_dataset(
    dst: str | Path,
    n: int,
    size: tuple[int, int] = (320, 320),
    seed: int = 0,
    val_fraction: float = 0.2,
    ok_probability: float = 0.25,
) -> Path:
    """Write `n` synthetic images in Ultralytics layout with `data.yaml`; returns the yaml path."""
    dst = Path(dst)
    rng = np.random.default_rng(seed)
    n_val = round(n * val_fraction) if n > 1 else 0
    for i in range(n):
        split = "val" if i < n_val else "train"
        img, boxes = make_sample(rng, size, ok_probability=ok_probability)
        (dst / "images" / split).mkdir(parents=True, exist_ok=True)
        (dst / "labels" / split).mkdir(parents=True, exist_ok=True)
        stem = f"synth_{i:05d}"
        cv2.imwrite(str(dst / "images" / split / f"{stem}.png"), img)
        lines = yolo_label_lines(boxes, size[1], size[0])
        (dst / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    data = {
        "path": str(dst.resolve()),
        "train": "images/train",
        "val": "images/val" if n_val else "images/train",
        "names": dict(enumerate(CLASSES)),
    }
    yaml_path = dst / "data.yaml"
    yaml_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return yaml_path


def write_sample_images(
    dst: str | Path,
    n: int = 8,
    sizes: Sequence[tuple[int, int]] = ((320, 320), (480, 640)),
    seed: int = 2024,
    ok_every: int = 3,
    quality: int = 90,
) -> list[Path]:
    """Write `n` demo part images as JPEG (`part_001_ng.jpg`, `part_003_ok.jpg`, ...) and `labels.json`.

    Every `ok_every`-th part is defect-free; the others carry 1-3 defects. `labels.json` holds the exact
    boxes (class name, x1, y1, x2, y2 in pixels) so a demo can show what the model should find.
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written: list[Path] = []
    truth: dict[str, list[dict[str, object]]] = {}
    for i in range(n):
        ok = (i + 1) % ok_every == 0
        size = sizes[i % len(sizes)]
        while True:  # an NG part must really carry a defect (a drawn one can vanish off the edge)
            img, boxes = make_sample(rng, size, ok_probability=1.0 if ok else 0.0)
            if ok or boxes:
                break
        path = dst / f"part_{i + 1:03d}_{'ok' if ok else 'ng'}.jpg"
        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        truth[path.name] = [{"class": CLASSES[c], "xyxy": [x1, y1, x2, y2]} for c, x1, y1, x2, y2 in boxes]
        written.append(path)
    import json

    (dst / "labels.json").write_text(json.dumps(truth, indent=1) + "\n")
    return written
