"""The one YOLO label writer: a box in image pixels -> a line of an Ultralytics label file, and a review
-> the label lines of one camera's image. `dataset from-reviews`, the hub's `collect` and `dataset import`
all write labels through it, so the same review gives the same label file whichever road it takes.

Rules: a box is clipped to the image, one with no area left is dropped; a part judged good (false reject,
confirmed OK) gets an empty label (its boxes, if any, are not written). Reviews whose boxes contradict their
decision (an escape without a box ...) and NG parts marked "not localised" never get here:
`edge_agent.reviews.export_problem` refuses them with a message first.

Example:
    >>> yolo_line(0, [-5, 10, 60, 30], 100, 50)  # clipped at x = 0
    '0 0.300000 0.400000 0.600000 0.400000'
    >>> yolo_line(1, [120, 0, 130, 10], 100, 50) is None  # wholly outside: dropped
    True
    >>> box = {"camera": "top", "class": "pit", "class_id": 0, "xyxy": [10, 10, 30, 20]}
    >>> review_labels({"decision": "escape", "boxes": [box]}, "top", 100, 50)
    ['0 0.200000 0.300000 0.200000 0.200000']
    >>> review_labels({"decision": "false_reject", "boxes": [box]}, "top", 100, 50)
    []
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

#: decisions that say the part is good: its label has no defect
GOOD_PART_DECISIONS = ("false_reject", "confirmed_ok")


def clip_box(xyxy: Sequence[float], width: float, height: float) -> tuple[float, float, float, float] | None:
    """The box (pixels, corners in any order) clipped to the image, or None when no area is left."""
    x1, x2 = sorted((float(xyxy[0]), float(xyxy[2])))
    y1, y2 = sorted((float(xyxy[1]), float(xyxy[3])))
    cx1, cy1, cx2, cy2 = max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)
    if cx2 - cx1 <= 0 or cy2 - cy1 <= 0:
        return None
    return cx1, cy1, cx2, cy2


def yolo_line(class_id: int, xyxy: Sequence[float], width: float, height: float) -> str | None:
    """`class cx cy w h` (normalised, 6 decimals) of the clipped box, or None when it has no area."""
    box = clip_box(xyxy, width, height)
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return (
        f"{class_id} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
        f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}"
    )


def label_text(lines: Sequence[str]) -> str:
    """A label file's content: one line each, newline-terminated; empty for a good part."""
    return "".join(line + "\n" for line in lines)


def review_labels(
    review: dict[str, Any],
    camera: str,
    width: float,
    height: float,
    class_id_of: Callable[[dict[str, Any]], int] | None = None,
) -> list[str]:
    """The label lines of `camera`'s image of a reviewed part (see the module's rules). `class_id_of(box)`
    maps a box to the dataset's class id (default: the box's own `class_id`)."""
    if review["decision"] in GOOD_PART_DECISIONS:
        return []
    lines = []
    for box in review.get("boxes") or []:
        if box["camera"] != camera:
            continue
        cid = class_id_of(box) if class_id_of else int(box["class_id"])
        line = yolo_line(cid, box["xyxy"], width, height)
        if line is not None:
            lines.append(line)
    return lines
