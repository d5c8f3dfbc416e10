"""Anomaly metrics with numpy only: AUROC (image and pixel), AUPRO, and the operating point from good parts.

Scores: higher = more anomalous. Labels: 1 = defect. A part whose score reaches the threshold is rejected.

- `auroc`: the probability that a random defect scores above a random good one (ties count half).
- `aupro`: MVTec AD's per-region overlap: the mean over defect regions (connected areas of the masks) of the
  share of the region above the threshold, integrated over the false-positive rate of good pixels from 0 to
  `max_fpr` (0.3) and divided by `max_fpr` (1.0 = every region fully found before 30 % of good pixels fire).
- `threshold_for_false_reject`: the image threshold that rejects at most `rate` of the given good parts.

Example:
    >>> good, bad = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.35, 0.9])
    >>> auroc(np.r_[good, bad], np.r_[np.zeros(4), np.ones(2)])
    0.875
    >>> t = threshold_for_false_reject(good, 0.25)
    >>> round(t, 6), float((good >= t).mean()), escape_rate(bad, t)
    (0.3, 0.25, 0.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

FALSE_REJECT_TARGETS = (0.01, 0.02, 0.05)


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties averaged."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # start of each run of equal values, and the average rank over the run
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U). NaN when one class is missing."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _ranks(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate, thresholds), thresholds descending, from (0, 0)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    return (
        np.r_[0.0, fp / max(1, (~y).sum())],
        np.r_[0.0, tp / max(1, y.sum())],
        np.r_[np.inf, s[last]],
    )


def aupro(maps: np.ndarray, masks: np.ndarray, max_fpr: float = 0.3, steps: int = 300) -> float:
    """Normalised area under the per-region-overlap curve up to `max_fpr` (see the module doc).

    `maps` (N,H,W) float scores and `masks` (N,H,W) bool over the same images; good images have empty masks.
    NaN without any defect region."""
    maps = np.asarray(maps, dtype=np.float32)
    masks = np.asarray(masks, dtype=bool)
    regions: list[np.ndarray] = []
    for m, mask in zip(maps, masks):
        if not mask.any():
            continue
        n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        for k in range(1, n):
            regions.append(np.sort(m[labels == k]))
    if not regions:
        return float("nan")
    negatives = np.sort(maps[~masks])
    if negatives.size == 0:
        return float("nan")
    # thresholds at which the good pixels' FPR goes from max_fpr down to 0
    fprs = np.linspace(max_fpr, 0.0, steps)
    idx = np.clip(np.ceil((1 - fprs) * negatives.size).astype(int), 0, negatives.size - 1)
    thresholds = np.maximum.accumulate(negatives[idx])
    fpr = 1 - np.searchsorted(negatives, thresholds, side="left") / negatives.size
    pro = np.mean([1 - np.searchsorted(r, thresholds, side="left") / r.size for r in regions], axis=0)
    order = np.argsort(fpr)
    fpr, pro = fpr[order], pro[order]
    keep = fpr <= max_fpr + 1e-12
    fpr, pro = (
        np.r_[0.0, fpr[keep], max_fpr],
        np.r_[pro[keep][0] if keep.any() else 0.0, pro[keep], pro[keep][-1] if keep.any() else 0.0],
    )
    return float(np.trapezoid(pro, fpr) / max_fpr)


def threshold_for_false_reject(good_scores: np.ndarray, rate: float) -> float:
    """The lowest threshold that rejects at most `rate` of `good_scores` (reject = score >= threshold):
    just above the k-th highest good score, k = floor(rate * n)."""
    s = np.sort(np.asarray(good_scores, dtype=np.float64))[::-1]
    if s.size == 0:
        raise ValueError("no good scores to set a threshold from")
    k = int(np.floor(rate * s.size + 1e-9))  # this many goods may be rejected
    # reject the k highest: threshold between s[k] and s[k-1]; keep s[k] accepted
    return float(np.nextafter(s[k], np.inf)) if k < s.size else float(s[-1])


def false_reject_rate(good_scores: np.ndarray, threshold: float) -> float:
    g = np.asarray(good_scores)
    return float((g >= threshold).mean()) if g.size else float("nan")


def escape_rate(defect_scores: np.ndarray, threshold: float) -> float:
    d = np.asarray(defect_scores)
    return float((d < threshold).mean()) if d.size else float("nan")


@dataclass
class AnomalyOperatingPoint:
    """The image threshold set on held-out good parts and what it does on the evaluation set."""

    target_false_reject_rate: float
    image_threshold: float
    pixel_threshold: float
    held_out_good: int
    held_out_false_reject_rate: float
    eval_good: int
    eval_defects: int
    false_reject_rate: float | None  # on the evaluation's good parts
    escape_rate: float | None  # on the evaluation's defect parts
    escapes: int | None = None
    false_rejects: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{100 * v:.1f}%"

        return (
            f"Operating point for false reject <= {pct(self.target_false_reject_rate)} on "
            f"{self.held_out_good} held-out good parts: image threshold {self.image_threshold:.4f}\n"
            f"  on the evaluation set: escape {pct(self.escape_rate)} "
            f"({self.escapes} of {self.eval_defects}), "
            f"false reject {pct(self.false_reject_rate)} ({self.false_rejects} of {self.eval_good})"
            + "".join(f"\n  note: {n}" for n in self.notes)
        )


def operating_point(
    held_out_scores: np.ndarray,
    eval_good_scores: np.ndarray,
    eval_defect_scores: np.ndarray,
    target: float = 0.01,
    pixel_threshold: float | None = None,
) -> AnomalyOperatingPoint:
    """Threshold from the held-out good parts for `target` false rejects; rates on the evaluation set.
    The pixel threshold (regions on the line) defaults to the image threshold: the image score is a pooled
    map value, so a region appears where the part is rejected."""
    t = threshold_for_false_reject(held_out_scores, target)
    notes = []
    if len(held_out_scores) and 1 / len(held_out_scores) > target:
        notes.append(
            f"{len(held_out_scores)} held-out good parts cannot resolve {100 * target:g}% false rejects: the "
            "threshold sits just above the highest of them; capture more good parts"
        )
    g, d = np.asarray(eval_good_scores), np.asarray(eval_defect_scores)
    return AnomalyOperatingPoint(
        target_false_reject_rate=target,
        image_threshold=t,
        pixel_threshold=float(t if pixel_threshold is None else pixel_threshold),
        held_out_good=len(held_out_scores),
        held_out_false_reject_rate=false_reject_rate(held_out_scores, t),
        eval_good=len(g),
        eval_defects=len(d),
        false_reject_rate=false_reject_rate(g, t) if g.size else None,
        escape_rate=escape_rate(d, t) if d.size else None,
        escapes=int((d < t).sum()) if d.size else None,
        false_rejects=int((g >= t).sum()) if g.size else None,
        notes=notes,
    )


def escape_at_false_reject(
    good_scores: np.ndarray, defect_scores: np.ndarray, targets: tuple[float, ...] = FALSE_REJECT_TARGETS
) -> dict[str, dict[str, float]]:
    """On one evaluation set: for each false-reject target, the threshold that meets it on its good parts
    and the escape rate it gives (the trade-off curve at a few points)."""
    out = {}
    for r in targets:
        t = threshold_for_false_reject(good_scores, r)
        out[f"{r:g}"] = {
            "threshold": t,
            "false_reject_rate": false_reject_rate(good_scores, t),
            "escape_rate": escape_rate(defect_scores, t),
        }
    return out
