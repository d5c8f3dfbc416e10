"""The defects a line expects, synthesised on its real good images: the training targets of an anomaly model.

A quality engineer names the kinds (our generator's shapes: `scratch`, `crack`, `pit`, `stain`, plus `blob`,
generic Perlin-like patches for whatever else may come) with, per kind, a share, a size range (1.0 = the
generator's own sizes relative to the image's shorter side; 0.3 = a third of that) and a contrast range in
grey levels (0-255) against the surface under the defect, dark, bright or both. In the training config:

    defects:
      crack: {share: 2, size: [0.3, 1.0], contrast: [20, 120], polarity: dark}
      pit: {}            # the kind's defaults
      blob: {share: 0.5}

Example:
    >>> import numpy as np
    >>> specs = parse_defects(["crack", "pit"])
    >>> good = np.full((64, 96, 3), 128, np.uint8)
    >>> img, mask = synthesise(np.random.default_rng(0), good, specs)
    >>> img.shape, mask.shape, bool(mask.any()), bool((img != 128).any())
    ((64, 96, 3), (64, 96), True, True)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from training.errors import TrainingInputError
from training.synth import defect_cover, smooth_noise

KINDS: tuple[str, ...] = ("scratch", "crack", "pit", "stain", "blob")
POLARITIES: tuple[str, ...] = ("dark", "bright", "both")
LABEL_COVER = 0.3  # anti-aliased coverage above which a pixel is labelled defect


@dataclass(frozen=True)
class DefectSpec:
    kind: str
    share: float = 1.0  # relative frequency among the kinds
    size: tuple[float, float] = (0.3, 1.0)
    contrast: tuple[float, float] = (20.0, 120.0)
    polarity: str = "both"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULTS: dict[str, DefectSpec] = {
    "scratch": DefectSpec("scratch", 1.0, (0.3, 1.0), (20, 120), "both"),
    "crack": DefectSpec("crack", 1.0, (0.3, 1.0), (20, 120), "dark"),
    "pit": DefectSpec("pit", 1.0, (0.4, 1.5), (20, 120), "dark"),
    "stain": DefectSpec("stain", 1.0, (0.4, 1.2), (15, 80), "both"),
    "blob": DefectSpec("blob", 1.0, (0.3, 1.0), (20, 100), "both"),
}


def _pair(value: Any, where: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, float)) for v in value)
    ):
        lo, hi = float(value[0]), float(value[1])
        if lo <= hi:
            return lo, hi
    raise TrainingInputError(f"{where}: expected [low, high] numbers with low <= high, got {value!r}")


def parse_defects(config: Iterable[str] | Mapping[str, Any] | None) -> list[DefectSpec]:
    """Kinds from a list of names (defaults each) or a mapping kind -> {share, size, contrast, polarity}."""
    if config is None:
        config = ["scratch", "crack", "pit", "stain", "blob"]
    items = config.items() if isinstance(config, Mapping) else ((name, {}) for name in config)
    specs: list[DefectSpec] = []
    for name, raw in items:
        name = str(name).strip()
        if name not in DEFAULTS:
            raise TrainingInputError(f"defects: unknown kind {name!r} (known: {', '.join(KINDS)})")
        raw = dict(raw or {})
        unknown = set(raw) - {"share", "size", "contrast", "polarity"}
        if unknown:
            raise TrainingInputError(
                f"defects.{name}: unknown key(s) {', '.join(sorted(unknown))} "
                "(share, size, contrast, polarity)"
            )
        base = DEFAULTS[name]
        polarity = str(raw.get("polarity", base.polarity))
        if polarity not in POLARITIES:
            raise TrainingInputError(f"defects.{name}.polarity: {polarity!r} is not one of {POLARITIES}")
        share = float(raw.get("share", base.share))
        size = _pair(raw["size"], f"defects.{name}.size") if "size" in raw else base.size
        contrast = _pair(raw["contrast"], f"defects.{name}.contrast") if "contrast" in raw else base.contrast
        if share <= 0 or size[0] <= 0 or contrast[0] < 0:
            raise TrainingInputError(f"defects.{name}: share and size must be > 0, contrast >= 0")
        specs.append(DefectSpec(name, share, size, contrast, polarity))
    if not specs:
        raise TrainingInputError("defects: name at least one kind")
    return specs


def _blob_cover(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Perlin-like patches: smooth noise thresholded so that a small share of the image is covered."""
    cell = max(2.0, min(h, w) * 0.12 * scale)
    noise = smooth_noise(rng, h, w, cell) + 0.3 * smooth_noise(rng, h, w, cell / 3)
    share = rng.uniform(0.002, 0.02) * scale
    cover = (noise >= np.quantile(noise, 1 - share)).astype(np.float32)
    n, labels = cv2.connectedComponents(cover.astype(np.uint8), connectivity=8)
    if n > 2:  # keep one to three patches
        keep = rng.permutation(np.arange(1, n))[: int(rng.integers(1, 4))]
        cover = np.isin(labels, keep).astype(np.float32)
    return cv2.GaussianBlur(cover, (3, 3), 0)


def _offsets(rng: np.random.Generator, size: int, canvas: int) -> tuple[int, int, int]:
    """(destination start, source start, length) to place a canvas side on an image side at random."""
    shift = int(rng.integers(0, abs(size - canvas) + 1))
    return (shift, 0, canvas) if canvas <= size else (0, shift, size)


def _shape_cover(rng: np.random.Generator, h: int, w: int, spec: DefectSpec) -> np.ndarray:
    """The kind's coverage (float 0-1), drawn on a canvas `size` times the image, placed at random."""
    scale = float(rng.uniform(*spec.size))
    if spec.kind == "blob":
        return _blob_cover(rng, h, w, scale)
    ch, cw = max(8, round(h * scale)), max(8, round(w * scale))
    canvas = defect_cover(rng, ch, cw, spec.kind)
    cover = np.zeros((h, w), np.float32)
    # paste (or crop, for scale > 1) the canvas at a random offset, axis by axis
    (dy, sy, ny), (dx, sx, nx) = (_offsets(rng, h, ch), _offsets(rng, w, cw))
    cover[dy : dy + ny, dx : dx + nx] = canvas[sy : sy + ny, sx : sx + nx]
    return cover


def paint(rng: np.random.Generator, img: np.ndarray, cover: np.ndarray, spec: DefectSpec) -> np.ndarray:
    """`img` (H,W,3 uint8) with the defect blended in: darker or brighter than the surface under it by a
    contrast drawn from the spec; the surface's texture shows through or is replaced, at random."""
    inside = cover > LABEL_COVER
    if not inside.any():
        return img
    f = img.astype(np.float32)
    local = float(f[inside].mean())
    dark = spec.polarity == "dark" or (spec.polarity == "both" and rng.random() < 0.5)
    contrast = float(rng.uniform(*spec.contrast))
    if dark and local - contrast < 0 and local + contrast <= 255 and spec.polarity == "both":
        dark = False
    shift = -contrast if dark else contrast
    alpha = cover * float(rng.uniform(0.75, 1.0))
    if spec.kind in ("stain", "blob"):
        alpha = cv2.GaussianBlur(alpha, (0, 0), float(rng.uniform(0.5, 2.0)))
    if rng.random() < 0.5:  # texture kept: a shift
        out = f + (alpha * shift)[..., None]
    else:  # texture replaced: a flat level (plus a little grain)
        level = np.clip(local + shift, 0, 255) + rng.normal(0, 2, cover.shape).astype(np.float32)
        out = f * (1 - alpha[..., None]) + (alpha * level)[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def synthesise(
    rng: np.random.Generator, good: np.ndarray, specs: list[DefectSpec], max_defects: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """One training example from a good image: (image with 1..max_defects defects, uint8 0/1 mask)."""
    h, w = good.shape[:2]
    shares = np.array([s.share for s in specs], dtype=np.float64)
    shares /= shares.sum()
    img, mask = good, np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, max_defects + 1))):
        spec = specs[int(rng.choice(len(specs), p=shares))]
        cover = _shape_cover(rng, h, w, spec)
        img = paint(rng, img, cover, spec)
        mask |= (cover > LABEL_COVER).astype(np.uint8)
    return img, mask
