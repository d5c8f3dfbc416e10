"""Anomaly data sets from our own generator (training/synth.py), in the MVTec AD layout.

`train/good` and `test/good` hold defect-free parts; `test/defect` parts carry one to three of the generator's
defects (scratch, pit, crack, stain) with their pixel masks in `ground_truth/defect/<stem>_mask.png`. An
anomaly model trains on `train/good` only and never sees the generator's defects: its own synthetic defects
are painted by `training.anomaly.defects`, a different painter.

Example:
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> root = write_anomaly_set(root, n_train=2, n_test_good=1, n_test_defect=1, sizes=((48, 64),))
    >>> sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))  # doctest: +NORMALIZE_WHITESPACE
    ['ground_truth/defect/defect_0000_mask.png', 'test/defect/defect_0000.png', 'test/good/good_0000.png',
     'train/good/good_0000.png', 'train/good/good_0001.png']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from training.synth import make_sample


def write_anomaly_set(
    dst: str | Path,
    n_train: int = 300,
    n_test_good: int = 100,
    n_test_defect: int = 100,
    sizes: Sequence[tuple[int, int]] = ((320, 320), (480, 640)),
    seed: int = 0,
    surface_kind: str | None = None,
) -> Path:
    """Write the set under `dst`; returns `dst`. Sizes cycle per image; every surface kind unless given."""
    root = Path(dst)
    rng = np.random.default_rng(seed)
    plan = [("train/good", "good", n_train, 1.0), ("test/good", "good", n_test_good, 1.0),
            ("test/defect", "defect", n_test_defect, 0.0)]  # fmt: skip
    for folder, stem, count, ok_probability in plan:
        (root / folder).mkdir(parents=True, exist_ok=True)
        if stem == "defect":
            (root / "ground_truth/defect").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            size = sizes[i % len(sizes)]
            while True:  # a defect part must really carry a defect (a drawn one can find no free place)
                cover = np.zeros(size, np.float32)
                img, boxes = make_sample(
                    rng, size, ok_probability=ok_probability, surface_kind=surface_kind, cover_out=cover
                )
                if ok_probability == 1.0 or boxes:
                    break
            cv2.imwrite(str(root / folder / f"{stem}_{i:04d}.png"), img)
            if stem == "defect":
                mask = ((cover > 0.5) * 255).astype(np.uint8)
                cv2.imwrite(str(root / "ground_truth/defect" / f"{stem}_{i:04d}_mask.png"), mask)
    return root


def write_aligned_set(
    dst: str | Path,
    n_train: int = 60,
    n_test_good: int = 20,
    n_test_defect: int = 20,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
    surface_kind: str = "metal",
    defects: Sequence[str] = ("scratch", "crack", "pit", "stain"),
) -> Path:
    """An aligned part (the statistics method's case): one part from the generator, photographed again and
    again in the same place (each picture: the generator's camera noise, a small gain and offset); defect
    parts carry one or two defects of `defects` (the generator's shapes, `training.anomaly.defects`) with
    their masks. Same MVTec layout as `write_anomaly_set`.

    >>> import tempfile
    >>> root = write_aligned_set(tempfile.mkdtemp(), n_train=2, n_test_good=1, n_test_defect=1, size=(32, 48))
    >>> len(list(root.rglob("*.png")))
    5
    """
    from training.anomaly.defects import parse_defects, synthesise
    from training.synth import _camera, surface

    root = Path(dst)
    rng = np.random.default_rng(seed)
    part = surface(rng, size[0], size[1], surface_kind)
    specs = parse_defects(list(defects))

    def photo() -> np.ndarray:
        lit = part.astype(np.float32) * rng.uniform(0.95, 1.05) + rng.uniform(-4, 4)
        return _camera(rng, np.clip(lit, 0, 255).astype(np.uint8))

    for folder, count in (("train/good", n_train), ("test/good", n_test_good)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            cv2.imwrite(str(root / folder / f"good_{i:04d}.png"), photo())
    (root / "test/defect").mkdir(parents=True, exist_ok=True)
    (root / "ground_truth/defect").mkdir(parents=True, exist_ok=True)
    for i in range(n_test_defect):
        img, mask = synthesise(rng, photo(), specs, max_defects=2)
        cv2.imwrite(str(root / "test/defect" / f"defect_{i:04d}.png"), img)
        cv2.imwrite(str(root / "ground_truth/defect" / f"defect_{i:04d}_mask.png"), mask * 255)
    return root
