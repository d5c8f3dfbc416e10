"""Drawing detections on an image, for saved NG pictures and `infer --save`.

Example:
    >>> import numpy as np
    >>> from vision.detections import Detections
    >>> d = Detections(np.array([[2, 2, 20, 20]], np.float32), np.array([0.9], np.float32),
    ...                np.array([0]), {0: "scratch"})
    >>> annotate(np.zeros((32, 32, 3), np.uint8), d).shape
    (32, 32, 3)
"""

from __future__ import annotations

import cv2
import numpy as np

from vision.detections import Detections

# BGR colours, one per class id (cycled); chosen to read well on grey metal
PALETTE = (
    (56, 56, 255),
    (151, 157, 255),
    (31, 112, 255),
    (29, 178, 255),
    (49, 210, 207),
    (10, 249, 72),
    (23, 204, 146),
    (134, 219, 61),
    (52, 147, 26),
    (187, 212, 0),
)


def colour(class_id: int) -> tuple[int, int, int]:
    return PALETTE[int(class_id) % len(PALETTE)]


def annotate(image: np.ndarray, detections: Detections, label: bool = True) -> np.ndarray:
    """A copy of `image` with boxes, masks (translucent) and `class confidence` labels."""
    out = image.copy()
    if detections.mask is not None and len(detections):
        overlay = out.copy()
        for m, c in zip(detections.mask, detections.class_id, strict=False):
            overlay[m] = colour(c)
        out = cv2.addWeighted(overlay, 0.4, out, 0.6, 0)
    thickness = max(1, round(min(out.shape[:2]) / 300))
    for (x1, y1, x2, y2), c, s, name in zip(
        detections.xyxy.astype(int),
        detections.class_id,
        detections.confidence,
        detections.class_names,
        strict=False,
    ):
        cv2.rectangle(out, (x1, y1), (x2, y2), colour(c), thickness, cv2.LINE_AA)
        if label:
            text = f"{name} {s:.2f}"
            scale = max(0.35, thickness * 0.4)
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + 2
            cv2.rectangle(out, (x1, ty - th - 2), (x1 + tw + 2, ty + base - 2), colour(c), -1)
            cv2.putText(
                out, text, (x1 + 1, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA
            )
    return out
