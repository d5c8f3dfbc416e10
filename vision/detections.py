"""`Detections`: the result of one image's inference, as a struct of numpy arrays.

Example:
    >>> import numpy as np
    >>> d = Detections(
    ...     xyxy=np.array([[10, 10, 50, 40]], dtype=np.float32),
    ...     confidence=np.array([0.9], dtype=np.float32),
    ...     class_id=np.array([1]),
    ...     names={0: "scratch", 1: "pit"},
    ... )
    >>> len(d), d.class_names, d.area.tolist()
    (1, ['pit'], [1200.0])
    >>> len(d[d.confidence > 0.95])
    0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Boxes in original-image pixels (x1, y1, x2, y2), their confidence and class.

    `mask`, when present, is a boolean array (N, H, W) at the original image size.
    `data`: further per-box arrays of length N by name (as supervision's), e.g. `area_px` of anomaly regions.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    names: Mapping[int, str] = field(default_factory=dict)
    mask: np.ndarray | None = None
    data: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        if self.xyxy.shape != (n, 4):
            raise ValueError(f"xyxy must have shape (N, 4), got {self.xyxy.shape}")
        if self.confidence.shape != (n,) or self.class_id.shape != (n,):
            raise ValueError("confidence and class_id must have shape (N,) like xyxy")
        if self.mask is not None and len(self.mask) != n:
            raise ValueError("mask must have one entry per box")
        for key, values in self.data.items():
            if len(values) != n:
                raise ValueError(f"data[{key!r}] must have one entry per box")

    @classmethod
    def empty(
        cls, names: Mapping[int, str] | None = None, data: Mapping[str, np.ndarray] | None = None
    ) -> Detections:
        return cls(
            xyxy=np.zeros((0, 4), dtype=np.float32),
            confidence=np.zeros((0,), dtype=np.float32),
            class_id=np.zeros((0,), dtype=np.int64),
            names=dict(names or {}),
            data=dict(data or {}),
        )

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: Any) -> Detections:
        """Select boxes with an int, a slice, an index array or a boolean array."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            names=self.names,
            mask=None if self.mask is None else self.mask[index],
            data={k: v[index] for k, v in self.data.items()},
        )

    def scaled(self, sx: float, sy: float) -> Detections:
        """The boxes in an image `sx` times as wide and `sy` times as high (masks cannot be rescaled here;
        `data["area_px"]` is scaled by `sx * sy`, other data kept).

        >>> d = Detections(np.array([[10, 10, 50, 40]], np.float32), np.array([0.9]), np.array([0]))
        >>> d.scaled(2.0, 2.0).xyxy.tolist()
        [[20.0, 20.0, 100.0, 80.0]]
        """
        if self.mask is not None:
            raise ValueError("detections with masks cannot be rescaled")
        factors = np.array((sx, sy, sx, sy), np.float32)
        return Detections(
            xyxy=(self.xyxy * factors).astype(np.float32),
            confidence=self.confidence,
            class_id=self.class_id,
            names=self.names,
            data={k: v * (sx * sy) if k == "area_px" else v for k, v in self.data.items()},
        )

    @property
    def class_names(self) -> list[str]:
        return [self.names.get(int(c), str(int(c))) for c in self.class_id]

    @property
    def area(self) -> np.ndarray:
        """Box areas in pixels²."""
        wh = np.clip(self.xyxy[:, 2:4] - self.xyxy[:, 0:2], 0, None)
        return (wh[:, 0] * wh[:, 1]).astype(np.float32)

    @property
    def width(self) -> np.ndarray:
        return (self.xyxy[:, 2] - self.xyxy[:, 0]).astype(np.float32)

    @property
    def height(self) -> np.ndarray:
        return (self.xyxy[:, 3] - self.xyxy[:, 1]).astype(np.float32)

    @classmethod
    def merge(cls, parts: list[Detections]) -> Detections:
        """Concatenate detections (e.g. from several tiles or cameras). Masks are kept when one part has
        them: a part without masks adds its boxes as masks (`box_masks`), so no part's masks are lost;
        only parts whose masks are of different image sizes give no masks (they cannot be stacked).

            >>> seg = Detections(np.array([[0, 0, 2, 2]], np.float32), np.array([0.9], np.float32),
            ...                  np.array([0]), mask=np.ones((1, 4, 4), bool))
            >>> box = Detections(np.array([[1, 1, 3, 4]], np.float32), np.array([0.8], np.float32),
            ...                  np.array([1]))
            >>> merged = Detections.merge([seg, box])
            >>> merged.mask.shape, int(merged.mask[1].sum())  # the box's 2 x 3 pixels
            ((2, 4, 4), 6)
        """
        if not parts:
            return cls.empty()
        # a data key is kept where every part has it (e.g. regions' area_px), else dropped
        keys = set.intersection(*(set(p.data) for p in parts))
        return cls(
            xyxy=np.concatenate([p.xyxy for p in parts]).astype(np.float32),
            confidence=np.concatenate([p.confidence for p in parts]).astype(np.float32),
            class_id=np.concatenate([p.class_id for p in parts]).astype(np.int64),
            names=parts[0].names,
            mask=_merged_masks(parts),
            data={k: np.concatenate([p.data[k] for p in parts]) for k in sorted(keys)},
        )

    def to_records(self, decimals: int = 4) -> list[dict[str, Any]]:
        """JSON-ready list: `[{"class", "class_id", "confidence", "xyxy"}, ...]`."""
        return [
            {
                "class": name,
                "class_id": int(c),
                "confidence": round(float(s), decimals),
                "xyxy": [round(float(v), 2) for v in box],
            }
            for name, c, s, box in zip(
                self.class_names, self.class_id, self.confidence, self.xyxy, strict=False
            )
        ]


def box_masks(xyxy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boxes as boolean masks (N, height, width): what a detection without a mask covers.

        >>> box_masks(np.array([[0.4, 1, 2.6, 2]], np.float32), 3, 4).astype(int).tolist()
        [[[0, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]]]
    """
    out = np.zeros((len(xyxy), height, width), bool)
    for i, (x1, y1, x2, y2) in enumerate(np.rint(xyxy).astype(int)):
        out[i, max(y1, 0) : min(y2, height), max(x1, 0) : min(x2, width)] = True
    return out


def _merged_masks(parts: list[Detections]) -> np.ndarray | None:
    sizes = {p.mask.shape[1:] for p in parts if p.mask is not None}
    if len(sizes) != 1:  # no masks at all, or of different image sizes
        return None
    height, width = sizes.pop()
    return np.concatenate(
        [p.mask if p.mask is not None else box_masks(p.xyxy, height, width) for p in parts]
    )
