"""Drawing detections (and anomaly maps as heat) on an image, for saved NG pictures and `infer --save`.

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


def heat_rgba(amap: np.ndarray, pixel_threshold: float, alpha: float = 0.6) -> np.ndarray:
    """An anomaly map as a BGRA heat layer, to lay over its image: blue-to-red by the map's value up to
    twice the pixel threshold, its opacity growing with the value up to `alpha` (normal areas stay clear).

    >>> layer = heat_rgba(np.array([[0.0, 0.5, 2.0]], np.float32), pixel_threshold=0.5)
    >>> layer.shape, layer[0, :, 3].tolist()
    ((1, 3, 4), [0, 77, 153])
    """
    level = encode_anomaly_map(amap, pixel_threshold)  # 0..255, the threshold at 127.5
    heat = cv2.applyColorMap(level, cv2.COLORMAP_JET)
    opacity = np.rint(level.astype(np.float32) * alpha).astype(np.uint8)
    return np.dstack([heat, opacity])


def heat_overlay(
    image: np.ndarray, amap: np.ndarray, pixel_threshold: float, alpha: float = 0.6, outline: bool = True
) -> np.ndarray:
    """A copy of `image` (8-bit BGR) with its anomaly map blended over it as heat (`heat_rgba`) and the
    outline of every region at or above the threshold in red. `amap` is resized to the image if it is not
    at its size.

    >>> img = np.full((32, 32, 3), 128, np.uint8)
    >>> amap = np.zeros((16, 16), np.float32); amap[4:8, 4:8] = 1.0
    >>> out = heat_overlay(img, amap, pixel_threshold=0.5)
    >>> out.shape, bool((out[12, 12] != img[12, 12]).any()), bool((out[28, 28] == img[28, 28]).all())
    ((32, 32, 3), True, True)
    """
    h, w = image.shape[:2]
    if amap.shape[:2] != (h, w):
        amap = cv2.resize(amap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    layer = heat_rgba(amap, pixel_threshold, alpha)
    weight = layer[:, :, 3:].astype(np.float32) / 255
    blend = image.astype(np.float32) * (1 - weight) + layer[:, :, :3].astype(np.float32) * weight
    out = blend.astype(np.uint8)
    if outline:
        above = (amap >= pixel_threshold).astype(np.uint8)
        contours, _ = cv2.findContours(above, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        thickness = max(1, round(min(h, w) / 300))
        cv2.drawContours(out, contours, -1, (0, 0, 255), thickness, cv2.LINE_AA)
    return out


def encode_anomaly_map(amap: np.ndarray, pixel_threshold: float) -> np.ndarray:
    """An anomaly map as 8-bit grey, for keeping beside an archived image: value = 255 * map / (2 * pixel
    threshold), clipped, so the threshold is 127.5 and the overlay can be redrawn (`decode_anomaly_map`).

    >>> m = np.array([[0.0, 0.25, 0.5, 2.0]], np.float32)
    >>> encode_anomaly_map(m, 0.5).tolist()
    [[0, 64, 128, 255]]
    >>> decode_anomaly_map(encode_anomaly_map(m, 0.5), 0.5).round(2).tolist()
    [[0.0, 0.25, 0.5, 1.0]]
    """
    scale = 255.0 / (2 * pixel_threshold) if pixel_threshold > 0 else 255.0
    return np.clip(np.rint(amap * scale), 0, 255).astype(np.uint8)


def decode_anomaly_map(encoded: np.ndarray, pixel_threshold: float) -> np.ndarray:
    """The map `encode_anomaly_map` kept, in the model's units (beyond twice the threshold: clipped)."""
    scale = (2 * pixel_threshold) / 255.0 if pixel_threshold > 0 else 1 / 255.0
    return encoded.astype(np.float32) * scale
