"""Synthetic defect generator: textured surfaces with scratches, pits, cracks and stains, exact boxes.

For cold starts, for the demo line's images and model, and for tests. Needs only numpy and OpenCV.

Variety is what a model trained on it learns to cope with, so every sample draws its own:
surface (brushed metal at any angle, plastic, fabric, cast, painted), lighting (gain, gradient, hot spot),
defect shape (straight or curved scratches, branching cracks, round or oval pits, soft stains), size and
thickness, polarity (dark or bright) and contrast against the local surface, and camera effects (blur,
sensor noise, JPEG). Defects never overlap (their padded boxes are disjoint), so one defect is one box.

Example:
    >>> import numpy as np
    >>> img, boxes = make_sample(np.random.default_rng(0), size=(96, 128))
    >>> img.shape, img.dtype
    ((96, 128, 3), dtype('uint8'))
    >>> all(0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 96 for _, x1, y1, x2, y2 in boxes)
    True
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import yaml

from contract.yolo_labels import yolo_line

CLASSES: tuple[str, ...] = ("scratch", "pit", "crack", "stain")
SURFACES: tuple[str, ...] = ("metal", "plastic", "fabric", "cast", "painted")

Box = tuple[int, int, int, int, int]  # class_id, x1, y1, x2, y2 (pixels, exclusive end)

_PLACEMENT_TRIES = 12  # attempts to place a defect clear of the others before giving it up


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Noise with features about `cell` pixels wide, zero mean, unit-ish amplitude."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    return cv2.resize(rng.normal(0, 1, (gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)


def surface(rng: np.random.Generator, h: int, w: int, kind: str | None = None) -> np.ndarray:
    """A plausible textured, unevenly lit surface (BGR uint8)."""
    kind = kind or SURFACES[int(rng.integers(len(SURFACES)))]
    base = float(rng.uniform(70, 200))
    if kind == "metal":  # brushed: noise stretched along a random direction
        d = int(np.ceil(np.hypot(h, w))) + 2
        streaks = cv2.resize(rng.normal(0, 1, (d, max(4, d // 16))).astype(np.float32), (d, d))
        rot = cv2.getRotationMatrix2D((d / 2, d / 2), float(rng.uniform(0, 180)), 1.0)
        streaks = cv2.warpAffine(streaks, rot, (d, d), borderMode=cv2.BORDER_REFLECT)
        y0, x0 = (d - h) // 2, (d - w) // 2
        tex = streaks[y0 : y0 + h, x0 : x0 + w] * rng.uniform(5, 12)
        tex += rng.normal(0, 3, (h, w)).astype(np.float32)
        tint = np.array([1.0, 1.0, 1.02]) * rng.uniform(0.95, 1.05, 3)
    elif kind == "plastic":  # smooth with a soft gradient
        tex = rng.normal(0, 2, (h, w)).astype(np.float32)
        tint = rng.uniform(0.75, 1.25, 3)
    elif kind == "fabric":  # woven grid
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        period = rng.uniform(3, 7)
        tex = rng.uniform(5, 10) * np.sin(xx * 2 * np.pi / period) * np.sin(yy * 2 * np.pi / period)
        tex += rng.normal(0, 4, (h, w)).astype(np.float32)
        tint = rng.uniform(0.7, 1.3, 3)
    elif kind == "cast":  # sand-cast / rough: blotches at several scales plus grain
        s = min(h, w)
        tex = 6 * _smooth_noise(rng, h, w, s / 6) + 4 * _smooth_noise(rng, h, w, s / 25)
        tex += rng.normal(0, 5, (h, w)).astype(np.float32)
        tint = np.array([1.0, 1.0, 1.0]) * rng.uniform(0.92, 1.08, 3)
    else:  # painted: orange peel
        tex = 3 * _smooth_noise(rng, h, w, rng.uniform(4, 10)) + rng.normal(0, 1.5, (h, w)).astype(np.float32)
        tint = rng.uniform(0.6, 1.4, 3)
    grey = base + tex
    grey *= _lighting(rng, h, w)
    return np.clip(grey[..., None] * tint[None, None, :], 0, 255).astype(np.uint8)


def _lighting(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A multiplicative illumination field: a linear gradient and sometimes a soft hot spot or vignette."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = xx / max(w, 1) - 0.5, yy / max(h, 1) - 0.5
    field = 1.0 + u * rng.uniform(-0.35, 0.35) + v * rng.uniform(-0.35, 0.35)
    r = rng.random()
    if r < 0.3:  # hot spot (ring light reflection)
        cx, cy, sig = rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), rng.uniform(0.15, 0.4)
        field += rng.uniform(0.1, 0.3) * np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * sig**2))
    elif r < 0.55:  # vignette
        field -= rng.uniform(0.1, 0.3) * (u**2 + v**2) * 2
    return field.astype(np.float32)


def _box_from_mask(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _polyline(pts: list[tuple[float, float]]) -> np.ndarray:
    return np.rint(np.asarray(pts, dtype=np.float64)).astype(np.int32)


def _defect_mask(rng: np.random.Generator, h: int, w: int, name: str) -> np.ndarray:
    """The defect's coverage (float32 0-1) at a random place, before colouring."""
    s = min(h, w)
    mask = np.zeros((h, w), np.uint8)
    if name == "scratch":  # straight or gently curved, thin, long
        length = rng.uniform(0.15, 0.7) * s
        angle = rng.uniform(0, np.pi)
        cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        bend = rng.uniform(-0.15, 0.15) * length if rng.random() < 0.5 else 0.0
        ctrl = (cx - np.sin(angle) * bend, cy + np.cos(angle) * bend)
        t = np.linspace(0, 1, 24)[:, None]
        p1, p2 = np.array([cx - dx, cy - dy]), np.array([cx + dx, cy + dy])
        curve = (1 - t) ** 2 * p1 + 2 * (1 - t) * t * np.array(ctrl) + t**2 * p2
        thick = max(1, round(rng.uniform(0.005, 0.016) * s))
        cv2.polylines(mask, [_polyline(list(map(tuple, curve)))], False, 255, thick, cv2.LINE_AA)
    elif name == "pit":  # a round or oval dent
        r = max(2, int(rng.uniform(0.015, 0.05) * s))
        c = (int(rng.uniform(r, w - r)), int(rng.uniform(r, h - r)))
        axes = (r, max(2, int(r * rng.uniform(0.5, 1.0))))
        cv2.ellipse(mask, c, axes, rng.uniform(0, 180), 0, 360, 255, -1, cv2.LINE_AA)
    elif name == "crack":  # a jagged random walk, sometimes with a branch
        x, y = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        angle = rng.uniform(0, 2 * np.pi)
        pts = [(x, y)]
        for _ in range(int(rng.integers(6, 14))):
            angle += rng.normal(0, 0.6)
            step = rng.uniform(0.025, 0.06) * s
            x = float(np.clip(x + np.cos(angle) * step, 1, w - 2))
            y = float(np.clip(y + np.sin(angle) * step, 1, h - 2))
            pts.append((x, y))
        thick = max(1, round(rng.uniform(0.004, 0.01) * s))
        cv2.polylines(mask, [_polyline(pts)], False, 255, thick, cv2.LINE_AA)
        if rng.random() < 0.4:  # a branch from a middle vertex
            bx, by = pts[len(pts) // 2]
            ba = angle + rng.choice([-1, 1]) * rng.uniform(0.6, 1.2)
            branch = [(bx, by)]
            for _ in range(int(rng.integers(2, 5))):
                ba += rng.normal(0, 0.5)
                bx = float(np.clip(bx + np.cos(ba) * 0.04 * s, 1, w - 2))
                by = float(np.clip(by + np.sin(ba) * 0.04 * s, 1, h - 2))
                branch.append((bx, by))
            cv2.polylines(mask, [_polyline(branch)], False, 255, max(1, thick - 1), cv2.LINE_AA)
    else:  # stain: a soft irregular blob
        r = max(3, int(rng.uniform(0.05, 0.14) * s))
        c = np.array([rng.uniform(r, w - r), rng.uniform(r, h - r)])
        n = int(rng.integers(7, 12))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = r * rng.uniform(0.55, 1.0, n)
        poly = (c + np.stack([np.cos(angles) * radii, np.sin(angles) * radii], 1)).astype(np.int32)
        cv2.fillPoly(mask, [poly], 255, cv2.LINE_AA)
    return mask.astype(np.float32) / 255.0


# Public names for the anomaly trainer, which paints these shapes onto a line's real good images.
smooth_noise = _smooth_noise
defect_cover = _defect_mask


def _paint(rng: np.random.Generator, img: np.ndarray, cover: np.ndarray, name: str) -> None:
    """Blend the defect into `img` in place: dark or bright, with a contrast against the local surface."""
    s = min(img.shape[:2])
    inside = cover > 0.5
    local = img[inside].astype(np.float32).mean(axis=0)  # BGR mean under the defect
    level = float(local.mean())
    if name == "stain":
        alpha = cv2.GaussianBlur(cover, (0, 0), max(1.0, s / 80)) * rng.uniform(0.55, 0.85)
        colour = np.clip(local * rng.uniform(0.35, 0.7) + rng.uniform(-25, 25, 3), 0, 255)
        if rng.random() < 0.25:  # a light residue rather than a dark one
            colour = np.clip(local + rng.uniform(50, 90) + rng.uniform(-15, 15, 3), 0, 255)
    else:
        dark_share = {"scratch": 0.5, "pit": 0.85, "crack": 0.9}[name]
        dark = bool(rng.random() < dark_share)
        contrast = rng.uniform(60, 150)
        if dark and level - contrast < 5:  # not enough room below: take what there is, or go bright
            dark = level > 70
        elif not dark and level + contrast > 250:
            dark = level > 70 or level + 50 > 250
        target = max(0.0, level - contrast) if dark else min(255.0, level + contrast)
        colour = np.clip(local + (target - level), 0, 255)
        alpha = cv2.GaussianBlur(cover, (3, 3), 0)
        if name == "pit" and dark and rng.random() < 0.4:  # a bright rim where light catches the edge
            rim = cv2.dilate(cover, np.ones((3, 3), np.uint8)) - cover
            img[:] = np.clip(img + (rim * rng.uniform(30, 70))[..., None], 0, 255).astype(np.uint8)
    out = img.astype(np.float32) * (1 - alpha[..., None]) + colour[None, None, :] * alpha[..., None]
    img[:] = np.clip(out, 0, 255).astype(np.uint8)


def _camera(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """What a real camera adds: a little defocus, sensor noise, sometimes JPEG compression."""
    out = img
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.4, 1.1)))
    noise = rng.normal(0, rng.uniform(0.5, 3.5), out.shape).astype(np.float32)
    out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(55, 95))])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out


def _overlaps(box: tuple[int, int, int, int], others: Sequence[tuple[int, int, int, int]], gap: int) -> bool:
    x1, y1, x2, y2 = box
    return any(x1 < b[2] + gap and b[0] < x2 + gap and y1 < b[3] + gap and b[1] < y2 + gap for b in others)


def _label_box(cover: np.ndarray, pad: int) -> tuple[int, int, int, int] | None:
    """The box a careful labeller draws: the visible defect plus a small margin, inside the image."""
    box = _box_from_mask(cover > 0.5)
    if box is None:
        return None
    h, w = cover.shape
    x1, y1, x2, y2 = box
    return max(0, x1 - pad), max(0, y1 - pad), min(w, x2 + pad), min(h, y2 + pad)


def make_sample(
    rng: np.random.Generator,
    size: tuple[int, int] = (320, 320),
    max_defects: int = 3,
    ok_probability: float = 0.25,
    surface_kind: str | None = None,
    cover_out: np.ndarray | None = None,
) -> tuple[np.ndarray, list[Box]]:
    """One image (BGR) and its boxes. With `ok_probability` the part is defect-free.

    Defects are placed so that their boxes do not touch: a defect that finds no free place is left out.
    `cover_out` (float32 (h, w), zeros), when given, receives the defects' coverage 0-1 (pixel masks).
    """
    h, w = size
    s = min(h, w)
    img = surface(rng, h, w, surface_kind)
    boxes: list[Box] = []
    if rng.random() >= ok_probability:
        pad = max(1, round(0.008 * s))
        for _ in range(int(rng.integers(1, max_defects + 1))):
            cid = int(rng.integers(len(CLASSES)))
            for _try in range(_PLACEMENT_TRIES):
                cover = _defect_mask(rng, h, w, CLASSES[cid])
                box = _label_box(cover, pad)
                if box is None or box[2] - box[0] < 2 or box[3] - box[1] < 2:
                    continue
                if _overlaps(box, [b[1:] for b in boxes], gap=pad):
                    continue
                _paint(rng, img, cover, CLASSES[cid])
                if cover_out is not None:
                    np.maximum(cover_out, cover, out=cover_out)
                boxes.append((cid, *box))
                break
    return _camera(rng, img), boxes


def yolo_label_lines(boxes: Sequence[Box], w: int, h: int) -> list[str]:
    """The boxes' label lines, through the one label writer (`contract.yolo_labels`)."""
    return [line for c, *xyxy in boxes if (line := yolo_line(c, xyxy, w, h)) is not None]


def write_dataset(
    dst: str | Path,
    n: int,
    size: tuple[int, int] = (320, 320),
    seed: int = 0,
    val_fraction: float = 0.2,
    ok_probability: float = 0.25,
) -> Path:
    """Write `n` synthetic images in Ultralytics layout with `data.yaml`; returns the yaml path.

    `val_fraction=1` writes a test set: every image in `images/val` (data.yaml's train points there too).
    """
    dst = Path(dst)
    rng = np.random.default_rng(seed)
    n_val = round(n * val_fraction) if n > 1 or val_fraction >= 1 else 0
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
        "train": "images/train" if n_val < n else "images/val",
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
        while True:  # an NG part must really carry a defect (a drawn one can find no free place)
            img, boxes = make_sample(rng, size, ok_probability=1.0 if ok else 0.0)
            if ok or boxes:
                break
        path = dst / f"part_{i + 1:03d}_{'ok' if ok else 'ng'}.jpg"
        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        truth[path.name] = [{"class": CLASSES[c], "xyxy": [x1, y1, x2, y2]} for c, x1, y1, x2, y2 in boxes]
        written.append(path)
    (dst / "labels.json").write_text(json.dumps(truth, indent=1) + "\n")
    return written
