"""Decoding the output layouts Ultralytics exports, vectorised in numpy.

- detect, NMS heads (YOLOv8/YOLO11): `[B, 4 + nc, N]` (cx, cy, w, h, class scores)
- detect, end-to-end NMS-free heads (YOLO26/YOLOv10): `[B, N, 6]` (x1, y1, x2, y2, score, class)
- segment: the detect layouts with 32 mask coefficients appended, plus prototypes `[B, 32, mh, mw]`
- classify: `[B, nc]` probabilities

Example:
    >>> import numpy as np
    >>> boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    >>> nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 0, 0]), 0.5).tolist()
    [0, 2]
"""

from __future__ import annotations

import cv2
import numpy as np

MAX_WH = 7680  # class offset for class-aware NMS in one pass (as Ultralytics)
MAX_NMS = 30000  # most boxes fed to NMS
MAX_DET = 300  # most boxes kept per image


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    out = np.empty_like(xywh)
    half_w, half_h = xywh[:, 2] / 2, xywh[:, 3] / 2
    out[:, 0] = xywh[:, 0] - half_w
    out[:, 1] = xywh[:, 1] - half_h
    out[:, 2] = xywh[:, 0] + half_w
    out[:, 3] = xywh[:, 1] + half_h
    return out


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) against many (N, 4)."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(
    xyxy: np.ndarray, scores: np.ndarray, class_id: np.ndarray, iou: float, agnostic: bool = False
) -> np.ndarray:
    """Greedy class-aware NMS; returns kept indices, highest score first (like torchvision's `nms`)."""
    if len(xyxy) == 0:
        return np.zeros((0,), dtype=np.int64)
    boxes = xyxy if agnostic else xyxy + (class_id.astype(np.float32) * MAX_WH)[:, None]
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[box_iou(boxes[i], boxes[rest]) <= iou]
    return np.asarray(keep, dtype=np.int64)


def decode_nms_head(
    pred: np.ndarray, nc: int, conf: float, iou: float, max_det: int = MAX_DET, agnostic: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One image's `[4 + nc + extra, N]` output → (xyxy, score, class_id, extra) after NMS."""
    # Only the candidate columns (best score above conf, usually a few of thousands) are decoded further.
    keep = np.flatnonzero(pred[4 : 4 + nc].max(0) > conf)
    if not keep.size:
        return _empty(pred.shape[0] - 4 - nc)
    cand = pred[:, keep].T  # (M, 4 + nc + extra)
    best = cand[:, 4 : 4 + nc].argmax(1)
    score = cand[np.arange(len(cand)), 4 + best]
    if len(score) > MAX_NMS:
        top = np.argsort(-score, kind="stable")[:MAX_NMS]
        cand, score, best = cand[top], score[top], best[top]
    xyxy = xywh_to_xyxy(cand[:, :4])
    kept = nms(xyxy, score, best, iou, agnostic)[:max_det]
    return xyxy[kept], score[kept], best[kept].astype(np.int64), cand[kept, 4 + nc :]


def decode_end2end_head(
    pred: np.ndarray, conf: float, max_det: int = MAX_DET
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One image's `[N, 6 + extra]` NMS-free output → (xyxy, score, class_id, extra)."""
    keep = np.nonzero(pred[:, 4] > conf)[0][:max_det]
    rows = pred[keep]
    return rows[:, :4].copy(), rows[:, 4].copy(), rows[:, 5].astype(np.int64), rows[:, 6:]


def _empty(extra: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.zeros((0, 4), np.float32),
        np.zeros((0,), np.float32),
        np.zeros((0,), np.int64),
        np.zeros((0, extra), np.float32),
    )


def _sigmoid_free_masks(coeffs: np.ndarray, protos: np.ndarray) -> np.ndarray:
    c, mh, mw = protos.shape
    return (coeffs @ protos.reshape(c, -1)).reshape(-1, mh, mw)


def masks_to_original(
    coeffs: np.ndarray,
    protos: np.ndarray,
    boxes_input: np.ndarray,
    input_shape: tuple[int, int],
    pad: tuple[int, int],
    unpadded: tuple[int, int],
    orig_shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Instance masks (N, H, W) bool at the original image size, and which instances have any mask.

    As Ultralytics: prototypes × coefficients, bilinear upsample to the model input, crop to the box,
    threshold at 0 (an instance whose mask is empty there is dropped); then the padding is cut off and
    the mask resized to the original image.
    """
    n = len(coeffs)
    h0, w0 = orig_shape
    if n == 0:
        return np.zeros((0, h0, w0), dtype=bool), np.zeros((0,), dtype=bool)
    raw = _sigmoid_free_masks(coeffs.astype(np.float32), protos.astype(np.float32))
    ih, iw = input_shape
    pad_x, pad_y = pad
    uh, uw = unpadded
    out = np.zeros((n, h0, w0), dtype=bool)
    nonempty = np.zeros((n,), dtype=bool)
    cols = np.arange(iw, dtype=np.float32)[None, :]
    rows = np.arange(ih, dtype=np.float32)[:, None]
    for k in range(n):  # per instance: cv2.resize works on one 2-D map at a time
        up = cv2.resize(raw[k], (iw, ih), interpolation=cv2.INTER_LINEAR)
        x1, y1, x2, y2 = boxes_input[k]
        inside = (cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)
        full = (up > 0) & inside
        nonempty[k] = full.any()
        content = full.astype(np.float32)[pad_y : pad_y + uh, pad_x : pad_x + uw]
        out[k] = cv2.resize(content, (w0, h0), interpolation=cv2.INTER_LINEAR) > 0.5
    return out, nonempty
