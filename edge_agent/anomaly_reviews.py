"""Reviewed parts of an anomaly line, as training wants them: good images and NG images.

An anomaly model learns from good parts only, so the reviews that matter most are the false rejects
(judged NG, the part was good: the next model must learn that this look is normal) and the confirmed
NG parts and escapes (real defects: the evaluation set, and the operating point's escape rate). The
journal holds the reviews (`ResultJournal.current_reviews`), the archive the images; this module pairs
them. `training` never imports `edge_agent`: it reads the folder `write_reviewed_images` writes
(`edge-inspect dataset anomaly-from-reviews DST --line L`): `good/`, `ng/` and `reviews.jsonl`.

Example:
    >>> found = reviewed_images("data/journal.sqlite", "data/archive", line="tiles")   # doctest: +SKIP
    >>> [i.path.name for i in found.good], [i.decision for i in found.ng]                # doctest: +SKIP
    (['0000000012_P-12_NG_top.png'], ['confirmed_ng', 'escape'])
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.archive import archived_image
from edge_agent.journal import ResultJournal

#: decisions saying the part was good / was bad, whatever the machine said
GOOD_DECISIONS = ("false_reject", "confirmed_ok")
NG_DECISIONS = ("confirmed_ng", "escape")


@dataclass(frozen=True)
class ReviewedImage:
    """One camera's archived image of a reviewed part."""

    path: Path  # the archived raw image (the pixels the model saw)
    line: str
    camera: str
    seq: int
    result_id: str
    verdict: str  # the machine's
    decision: str  # the reviewer's (current review)
    boxes: list[dict[str, Any]]  # the reviewer's boxes on this camera: camera, class, class_id, xyxy
    anomaly_score: float | None  # the anomaly model's image score then (None: no anomaly model)
    reviewed_at: str

    @property
    def good(self) -> bool:
        return self.decision in GOOD_DECISIONS


@dataclass
class ReviewedImages:
    good: list[ReviewedImage] = field(default_factory=list)  # false rejects and confirmed OK parts
    ng: list[ReviewedImage] = field(default_factory=list)  # confirmed NG parts and escapes
    missing: list[str] = field(default_factory=list)  # reviewed, but the image is no longer archived


def reviewed_images(journal: str | Path, archive: str | Path, line: str | None = None) -> ReviewedImages:
    """Every reviewed result of `line` (all lines when None) with its archived images, split by the
    reviewer's decision into good and NG images, oldest result first."""
    j = ResultJournal(Path(journal))
    try:
        reviews = j.current_reviews(line)
        results = {r["result_seq"]: j.get(r["result_seq"]) for r in reviews}
    finally:
        j.close()
    out = ReviewedImages()
    for review in reviews:
        seq = review["result_seq"]
        result = results.get(seq)
        if result is None:
            out.missing.append(f"#{seq}: the result is no longer in the journal")
            continue
        scores = {a.camera: a.score for a in result.anomaly}
        for frame in result.frames:
            path = archived_image(Path(archive), result, frame.camera)
            if path is None:
                out.missing.append(f"#{seq}/{frame.camera}: no archived image")
                continue
            image = ReviewedImage(
                path=path,
                line=result.line,
                camera=frame.camera,
                seq=seq,
                result_id=result.result_id,
                verdict=result.verdict,
                decision=review["decision"],
                boxes=[b for b in review["boxes"] if b["camera"] == frame.camera],
                anomaly_score=scores.get(frame.camera),
                reviewed_at=review["time"],
            )
            (out.good if image.good else out.ng).append(image)
    return out


def write_reviewed_images(found: ReviewedImages, dst: Path) -> int:
    """Copy the images into `dst/good/` and `dst/ng/` (named `<line>_<seq>_<camera>.<ext>`) with
    `dst/reviews.jsonl` saying where each came from; returns how many were written."""
    written = 0
    with open(dst / "reviews.jsonl", "w", encoding="utf-8") as manifest:
        for folder, images in (("good", found.good), ("ng", found.ng)):
            (dst / folder).mkdir(parents=True, exist_ok=True)
            for image in images:
                name = f"{folder}/{image.line}_{image.seq:010d}_{image.camera}{image.path.suffix}"
                shutil.copyfile(image.path, dst / name)
                record = {
                    "image": name,
                    "seq": image.seq,
                    "result_id": image.result_id,
                    "line": image.line,
                    "camera": image.camera,
                    "verdict": image.verdict,
                    "decision": image.decision,
                    "anomaly_score": image.anomaly_score,
                    "boxes": image.boxes,
                    "reviewed_at": image.reviewed_at,
                }
                manifest.write(json.dumps(record) + "\n")
                written += 1
    return written
