"""Operating points: per-class confidence thresholds for a target escape rate at the lowest false-reject rate.

Measured per part (image) as the line decides: a part is judged NG when any detection of class c reaches
class c's threshold. An NG part (at least one labelled defect) judged OK is an *escape*; an OK part (no
labelled defect) judged NG is a *false reject*.

How the thresholds are chosen (`choose_operating_point`):

1. Per class, the highest threshold at which the parts carrying that class are themselves caught by a
   detection *of that class* often enough (their escape rate <= target). This alone guarantees the part
   escape rate <= target, and no class is switched off because another class happens to fire on its parts.
2. The escape budget still left (target minus the escape rate of step 1) is spent greedily: raise the one
   threshold that removes the most false rejects per escape it adds, while the parts not caught by a
   class they carry stay within the target (so again no class leans on another's false alarms).
3. Every threshold is lowered while that adds no false reject (the escapes still left are caught where that
   costs nothing), then centred in the range over which no part's decision changes: a margin on both
   sides for the parts the split did not show.

Thresholds are floored to 0.001 so that written into a recipe they keep every part they caught.

Example: two classes, four NG parts and two OK parts (scores = best confidence per class per part).

    >>> scores = np.array([[0.9, 0.0], [0.6, 0.0], [0.0, 0.8], [0.0, 0.4], [0.5, 0.0], [0.0, 0.3]])
    >>> is_ng = np.array([True, True, True, True, False, False])
    >>> point = choose_operating_point(scores, is_ng, {0: "scratch", 1: "pit"}, target=0.0)
    >>> point.thresholds, point.escape_rate, point.false_reject_rate
    ({'scratch': 0.55, 'pit': 0.35}, 0.0, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

THRESHOLD_STEP = 0.001  # thresholds are floored to this step
MIN_THRESHOLD = 0.001  # evaluation keeps boxes down to this confidence; below it nothing is known
# Step 3 neither lowers a threshold below this nor centres below it: under Ultralytics' default confidence a
# detector's boxes are mostly weak duplicates and noise, which a split of a few hundred parts cannot rule out.
CENTRE_FLOOR = 0.25
CURVE_TARGETS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


@dataclass
class OperatingPoint:
    target_escape_rate: float
    thresholds: dict[str, float]  # class name -> minimum confidence
    escape_rate: float | None  # None without NG parts
    false_reject_rate: float | None  # None without OK parts
    ng_parts: int
    ok_parts: int
    escapes: int
    false_rejects: int
    reached: bool  # the escape rate meets the target
    per_class_recall: dict[str, float] = field(default_factory=dict)  # boxes found at IoU 0.5 at the point
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{100 * v:.2f}%"

        thr = ", ".join(f"{k} {v:.3f}" for k, v in self.thresholds.items())
        lines = [
            f"Operating point for escape <= {pct(self.target_escape_rate)}: thresholds {thr}",
            f"  escape rate {pct(self.escape_rate)} ({self.escapes} of {self.ng_parts} NG parts), "
            f"false-reject rate {pct(self.false_reject_rate)} "
            f"({self.false_rejects} of {self.ok_parts} OK parts)"
            + ("" if self.reached else "  TARGET NOT REACHED"),
        ]
        if self.per_class_recall:
            lines.append(
                "  box recall at the point (IoU 0.5): "
                + ", ".join(f"{k} {v:.3f}" for k, v in self.per_class_recall.items())
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _floor(t: float) -> float:
    """The largest multiple of THRESHOLD_STEP that is <= t (exactly, whatever the float rounding)."""
    k = math.floor(t / THRESHOLD_STEP)
    if round((k + 1) * THRESHOLD_STEP, 6) <= t:
        k += 1
    while k > 0 and round(k * THRESHOLD_STEP, 6) > t:
        k -= 1
    return max(MIN_THRESHOLD, round(k * THRESHOLD_STEP, 6))


def judged_ng(class_scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(parts,) bool: a part is NG when any class's best confidence reaches that class's threshold."""
    if class_scores.size == 0:
        return np.zeros(len(class_scores), dtype=bool)
    return (class_scores >= thresholds[None, :]).any(axis=1)


def rates(class_scores: np.ndarray, is_ng: np.ndarray, thresholds: np.ndarray) -> tuple[int, int]:
    """(escapes, false rejects) at `thresholds`."""
    ng = judged_ng(class_scores, thresholds)
    return int((is_ng & ~ng).sum()), int((~is_ng & ng).sum())


def own_escapes(
    class_scores: np.ndarray, present: np.ndarray, is_ng: np.ndarray, thresholds: np.ndarray
) -> int:
    """NG parts not caught by a detection of a class they carry (a part caught only because another class
    fired on it counts as escaped here: the choice must not lean on such luck)."""
    own = (present & (class_scores >= thresholds[None, :])).any(axis=1)
    return int((is_ng & ~own).sum())


def _per_class_start(
    class_scores: np.ndarray,
    class_present: np.ndarray,
    c: int,
    target: float,
    fallback: float,
) -> tuple[float, str | None]:
    """Step 1 for class c: the highest threshold at which the parts carrying c are caught by c itself."""
    own = class_scores[class_present[:, c], c]
    if len(own) == 0:
        return fallback, "no part in this split carries it: threshold of the uniform point used"
    allowed = math.floor(target * len(own) + 1e-9)  # misses the target tolerates
    ranked = np.sort(own)[::-1]  # descending
    if allowed >= len(own):
        return 1.0, None
    needed = float(ranked[len(own) - 1 - allowed])  # the weakest part that must still be caught
    if needed < MIN_THRESHOLD:
        missed = int((own < MIN_THRESHOLD).sum())
        return MIN_THRESHOLD, (
            f"{missed} of {len(own)} parts carrying it have no detection of it at all: "
            "its own escape target cannot be reached"
        )
    return needed, None


def choose_operating_point(
    class_scores: np.ndarray,
    is_ng: np.ndarray,
    names: Mapping[int, str],
    target: float = 0.01,
    class_present: np.ndarray | None = None,
) -> OperatingPoint:
    """Per-class thresholds meeting `target` escape rate at the lowest false-reject rate (see module doc).

    `class_scores` (parts, classes): each part's best confidence per class (0 = no detection).
    `class_present` (parts, classes) bool: which classes are labelled on each part; without it step 1
    starts every class at the best single threshold for the target.
    """
    class_scores = np.asarray(class_scores, dtype=np.float64).reshape(len(is_ng), len(names))
    is_ng = np.asarray(is_ng, dtype=bool)
    nc = len(names)
    n_ng, n_ok = int(is_ng.sum()), int((~is_ng).sum())
    notes: list[str] = []
    if n_ng == 0:
        notes.append("the split has no defective (NG) parts: the escape rate cannot be measured")
    if n_ok == 0:
        notes.append(
            "the split has no defect-free (OK) parts: the false-reject rate cannot be measured, so the "
            "thresholds meet the escape target only; evaluate on a split with OK parts before trusting them"
        )
    uniform = uniform_threshold_for_target(class_scores, is_ng, target)
    fallback = uniform if uniform is not None else MIN_THRESHOLD
    thresholds = np.full(nc, fallback)
    if class_present is not None:
        for c in range(nc):
            t, why = _per_class_start(class_scores, np.asarray(class_present, bool), c, target, fallback)
            thresholds[c] = _floor(t) if t < 1.0 else 1.0
            if why:
                notes.append(f"class {names[c]!r}: {why}")
    elif uniform is None and n_ng:
        notes.append("no single threshold reaches the escape target")
    allowed = math.floor(target * n_ng + 1e-9)
    present = (
        np.asarray(class_present, bool)
        if class_present is not None
        else np.repeat(is_ng[:, None], nc, axis=1)  # unknown classes: any class's detection may catch it
    )

    # step 2: spend what is left of the escape budget on the false rejects
    if n_ok:
        while True:
            esc, frr = rates(class_scores, is_ng, thresholds)
            if frr == 0:
                break
            best: tuple[float, int, float] | None = None  # (gain per escape, class, new threshold)
            for c in range(nc):
                above = np.unique(class_scores[:, c][class_scores[:, c] >= thresholds[c]])
                for s in above:  # raising c's threshold just above s drops every part scoring s
                    trial = thresholds.copy()
                    trial[c] = _floor(s + THRESHOLD_STEP) if s + THRESHOLD_STEP < 1.0 else 1.0
                    if trial[c] <= thresholds[c]:
                        continue
                    _, f2 = rates(class_scores, is_ng, trial)
                    own2 = own_escapes(class_scores, present, is_ng, trial)
                    if own2 > allowed or f2 >= frr:
                        continue
                    gain = (frr - f2) / (own2 - own_escapes(class_scores, present, is_ng, thresholds) + 1e-6)
                    if best is None or gain > best[0] + 1e-12:
                        best = (gain, c, float(trial[c]))
                    break  # the smallest raise for class c is the one to compare; larger ones next round
            if best is None:
                break
            thresholds[best[1]] = best[2]

    # step 3: centre every threshold in the interval where the decisions stay those of the lowest threshold
    # that adds no false reject (so escapes still left are caught where that costs nothing)
    # (without OK parts there is nothing to centre against: the thresholds stay the highest that catch)
    for c in range(nc if n_ok else 0):
        thresholds = _centred(class_scores, is_ng, present, thresholds, c)

    esc, frr = rates(class_scores, is_ng, thresholds)
    return OperatingPoint(
        target_escape_rate=float(target),
        thresholds={names[c]: round(float(thresholds[c]), 6) for c in range(nc)},
        escape_rate=esc / n_ng if n_ng else None,
        false_reject_rate=frr / n_ok if n_ok else None,
        ng_parts=n_ng,
        ok_parts=n_ok,
        escapes=esc,
        false_rejects=frr,
        reached=bool(n_ng == 0 or esc <= allowed),
        notes=notes,
    )


def _centred(
    class_scores: np.ndarray, is_ng: np.ndarray, present: np.ndarray, thresholds: np.ndarray, c: int
) -> np.ndarray:
    """Class c's threshold lowered as far as adds no false reject, then set to the middle of the range over
    which every part's decision stays the same: the point keeps its rates, with a margin on either side
    for parts the split did not show (a threshold right at the weakest caught part loses its look-alikes)."""
    _, frr = rates(class_scores, is_ng, thresholds)
    scores = class_scores[:, c]
    below = np.unique(scores[(scores < thresholds[c]) & (scores >= MIN_THRESHOLD)])[::-1]
    low = thresholds.copy()
    for s in below:  # descending: take in each weaker score while no OK part turns NG
        trial = low.copy()
        trial[c] = _floor(float(s))
        if trial[c] < CENTRE_FLOOR or rates(class_scores, is_ng, trial)[1] > frr:
            break
        low = trial
    esc, frr = rates(class_scores, is_ng, low)
    own = own_escapes(class_scores, present, is_ng, low)
    high = low[c]
    for s in np.unique(scores[scores > low[c]]):  # ascending: lift while that adds no escape or false reject
        trial = low.copy()
        trial[c] = _floor(float(s))
        if trial[c] <= high:
            continue
        e2, f2 = rates(class_scores, is_ng, trial)
        if e2 > esc or f2 > frr or own_escapes(class_scores, present, is_ng, trial) > own:
            break
        high = trial[c]
    # the lowest equivalent threshold is just above the strongest score the point leaves out
    left_out = scores[scores < low[c]]
    bottom = _floor(float(left_out.max()) + THRESHOLD_STEP) if len(left_out) else low[c]
    bottom = min(max(bottom, CENTRE_FLOOR), low[c])
    centred = low.copy()
    centred[c] = _floor((bottom + high) / 2)
    return centred


def uniform_threshold_for_target(class_scores: np.ndarray, is_ng: np.ndarray, target: float) -> float | None:
    """The highest single threshold (all classes) whose part escape rate is <= target; None if none is."""
    best = class_scores.max(axis=1) if class_scores.size else np.zeros(len(is_ng))
    ng = best[is_ng]
    if len(ng) == 0:
        return None
    allowed = math.floor(target * len(ng) + 1e-9)
    ranked = np.sort(ng)[::-1]
    if allowed >= len(ng):
        return 1.0
    needed = float(ranked[len(ng) - 1 - allowed])
    return _floor(needed) if needed >= MIN_THRESHOLD else None


def tradeoff_curve(class_scores: np.ndarray, is_ng: np.ndarray, points: int = 200) -> list[dict[str, float]]:
    """Escape and false-reject rates for one threshold on every class, swept from high to low."""
    best = class_scores.max(axis=1) if class_scores.size else np.zeros(len(is_ng))
    levels = np.unique(np.concatenate([[1.0], best[best >= MIN_THRESHOLD]]))[::-1]
    if len(levels) > points:
        levels = levels[np.linspace(0, len(levels) - 1, points).round().astype(int)]
    ng, ok = best[is_ng], best[~is_ng]
    return [
        {
            "threshold": float(t),
            "escape_rate": float(np.mean(ng < t)) if len(ng) else float("nan"),
            "false_reject_rate": float(np.mean(ok >= t)) if len(ok) else float("nan"),
        }
        for t in levels
    ]


def plot_tradeoff(
    path: Path,
    curve: list[dict[str, float]],
    per_class_points: list[OperatingPoint],
    chosen: OperatingPoint,
    title: str,
) -> Path:
    """Escape vs false reject: the one-threshold sweep, per-class points for several targets, the chosen."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a factory PC or CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    if curve:
        ax.plot(
            [100 * p["false_reject_rate"] for p in curve],
            [100 * p["escape_rate"] for p in curve],
            color="grey",
            linewidth=1.5,
            label="one threshold for all classes",
        )
    pts = [p for p in per_class_points if p.escape_rate is not None and p.false_reject_rate is not None]
    if pts:
        ax.plot(
            [100 * p.false_reject_rate for p in pts],  # type: ignore[operator]
            [100 * p.escape_rate for p in pts],  # type: ignore[operator]
            "o--",
            color="tab:blue",
            label="per-class thresholds, targets "
            + ", ".join(f"{100 * p.target_escape_rate:g}%" for p in pts),
        )
    if chosen.escape_rate is not None and chosen.false_reject_rate is not None:
        ax.plot(
            [100 * chosen.false_reject_rate],
            [100 * chosen.escape_rate],
            "*",
            markersize=16,
            color="tab:red",
            label=f"operating point: escape {100 * chosen.escape_rate:.1f}%, "
            f"false reject {100 * chosen.false_reject_rate:.1f}%",
        )
    ax.axhline(100 * chosen.target_escape_rate, color="tab:red", linewidth=0.8, linestyle=":")
    ax.set(xlabel="False-reject rate, % of OK parts", ylabel="Escape rate, % of NG parts", title=title)
    ax.set_xlim(left=-1)
    ax.set_ylim(bottom=-1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
