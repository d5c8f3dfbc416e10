"""PNG plots of an anomaly evaluation for the model page (matplotlib, Agg: no display needed).

- `roc.png`: image ROC curve, the operating point marked;
- `scores.png`: score histograms of good and defect parts with the image threshold;
- `examples.png`: the highest-scoring good parts and a spread of defect parts, each with its map as a heat
  overlay and the mask's outline where there is one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from training.anomaly.images import read_mask, read_rgb
from training.anomaly.metrics import roc_curve


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heat_overlay(rgb: np.ndarray, amap: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """RGB image with the map (0-1) blended in as a jet heat map and the mask's outline in green."""
    heat = cv2.applyColorMap(np.clip(amap * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    alpha = np.clip(amap, 0, 1)[..., None] * 0.6
    out = (rgb.astype(np.float32) * (1 - alpha) + heat.astype(np.float32) * alpha).astype(np.uint8)
    if mask is not None and mask.any():
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        out = np.ascontiguousarray(out)
        cv2.drawContours(out, contours, -1, (0, 255, 0), 1)
    return out


def write_plots(
    out_dir: Path, report: Any, good: Any, bad: Any, calib: np.ndarray, mask_of: dict[Path, Path | None]
) -> dict[str, str]:
    plt = _plt()
    out_dir.mkdir(parents=True, exist_ok=True)
    t = report.operating_point.image_threshold
    written: dict[str, str] = {}

    if len(good.scores) and len(bad.scores):
        fpr, tpr, _ = roc_curve(
            np.r_[good.scores, bad.scores], np.r_[np.zeros(len(good.scores)), np.ones(len(bad.scores))]
        )
        fig, ax = plt.subplots(figsize=(5, 4.5), dpi=100)
        ax.plot(fpr, tpr, linewidth=2, label=f"image AUROC {report.image_auroc:.3f}")
        op = report.operating_point
        if op.false_reject_rate is not None and op.escape_rate is not None:
            ax.plot(
                [op.false_reject_rate],
                [1 - op.escape_rate],
                "o",
                color="red",
                label=f"threshold {t:.3f}: FR {100 * op.false_reject_rate:.1f}%, "
                f"escape {100 * op.escape_rate:.1f}%",
            )
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(
            xlabel="False-reject rate (good parts)",
            ylabel="Caught (1 - escape rate)",
            xlim=(0, 1),
            ylim=(0, 1.01),
            title="Image ROC",
        )
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "roc.png")
        plt.close(fig)
        written["roc"] = str(out_dir / "roc.png")

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    everything = np.r_[good.scores, bad.scores, calib]
    bins = np.linspace(float(everything.min()), float(everything.max()) + 1e-9, 40)
    for scores, label, colour in (
        (calib, "held-out good", "tab:blue"),
        (good.scores, "good (eval)", "tab:green"),
        (bad.scores, "defect (eval)", "tab:red"),
    ):
        if len(scores):
            ax.hist(scores, bins=bins, alpha=0.45, label=f"{label} ({len(scores)})", color=colour)
    ax.axvline(t, color="black", linestyle="--", label=f"image threshold {t:.3f}")
    ax.set(xlabel="Image score", ylabel="Parts", title="Scores")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "scores.png")
    plt.close(fig)
    written["scores"] = str(out_dir / "scores.png")

    h, w = report.imgsz
    picks: list[tuple[str, Path, np.ndarray, float]] = []
    for i in np.argsort(-good.scores)[:2]:
        picks.append(("good", good.paths[i], good.maps[i], float(good.scores[i])))
    if len(bad.scores):
        order = np.argsort(-bad.scores)
        for i in order[np.linspace(0, len(order) - 1, min(4, len(order))).astype(int)]:
            picks.append(("defect", bad.paths[i], bad.maps[i], float(bad.scores[i])))
    if picks:
        fig, axes = plt.subplots(1, len(picks), figsize=(2.2 * len(picks) * max(0.5, w / h), 3.2), dpi=100)
        for ax, (kind, path, amap, score) in zip(np.atleast_1d(axes), picks):
            mp = mask_of.get(path)
            mask = read_mask(mp, (h, w)) if mp is not None else None
            ax.imshow(heat_overlay(read_rgb(path, (h, w)), amap, mask))
            verdict = "NG" if score >= t else "OK"
            ax.set_title(
                f"{kind}: {score:.2f} {verdict}", fontsize=8, color="red" if verdict == "NG" else "black"
            )
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(out_dir / "examples.png")
        plt.close(fig)
        written["examples"] = str(out_dir / "examples.png")
    return written
