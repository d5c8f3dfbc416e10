"""Measure an anomaly model through `vision` (as the line runs it) on good and defect images.

What it reports (`AnomalyReport`): image AUROC; pixel AUROC and AUPRO where defect masks exist (at the
model's resolution; good images count as all-good pixels); the operating point: the image threshold from
held-out good parts for a target false-reject rate and the escape / false-reject rates it gives on the
evaluation set; the escape rate at 1, 2 and 5 % false reject set on the evaluation's own good parts; the
time per image. Plots for the model page: ROC, score histogram with the threshold, examples with the map.

Example:
    >>> report = evaluate_anomaly("models/demo-anomaly/model.onnx", eval_set, held_out)   # doctest: +SKIP
    >>> print(report.summary())                                                          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.anomaly.images import EvalSet, read_mask
from training.anomaly.metrics import (
    FALSE_REJECT_TARGETS,
    AnomalyOperatingPoint,
    aupro,
    auroc,
    escape_at_false_reject,
    operating_point,
)
from training.errors import TrainingInputError

log = logging.getLogger(__name__)


@dataclass
class Scored:
    paths: list[Path]
    scores: np.ndarray  # (N,)
    maps: np.ndarray  # (N, H, W) at the model's resolution
    ms_per_image: float


def score_images(model: Any, paths: list[Path], keep_maps: bool = True) -> Scored:
    """Each image through `vision` at batch 1 (as on the line): score and map; unreadable files skipped."""
    from vision.errors import ImageError
    from vision.images import read_image
    from vision.preprocess import anomaly_input_tensor

    kept, scores, maps, run_s = [], [], [], 0.0
    for p in paths:
        try:
            frame = read_image(p)
        except ImageError as exc:
            log.warning("skipped: %s", exc)
            continue
        tensor = anomaly_input_tensor([frame], model.imgsz)
        t0 = time.perf_counter()
        s, m = model.run(tensor)
        run_s += time.perf_counter() - t0
        kept.append(p)
        scores.append(float(s[0]))
        if keep_maps:
            maps.append(m[0])
    h, w = model.imgsz
    return Scored(
        kept,
        np.asarray(scores, np.float64),
        np.stack(maps) if maps else np.zeros((0, h, w), np.float32),
        1000 * run_s / max(1, len(kept)),
    )


@dataclass
class AnomalyReport:
    model: str
    data: str
    data_spec: dict[str, str | None]
    imgsz: tuple[int, int]
    good_images: int
    defect_images: int
    masked_images: int
    image_auroc: float | None
    pixel_auroc: float | None
    aupro: float | None
    operating_point: AnomalyOperatingPoint
    escape_at_false_reject: dict[str, dict[str, float]]
    ms_per_image: float
    score_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["imgsz"] = list(self.imgsz)
        return d

    def summary(self) -> str:
        def num(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        curve = ", ".join(
            f"{100 * float(k):g}% FR: escape {100 * v['escape_rate']:.1f}%"
            for k, v in self.escape_at_false_reject.items()
        )
        lines = [
            f"{Path(self.model).name} on {self.data}: {self.good_images} good, {self.defect_images} defect "
            f"({self.masked_images} with masks) at {self.imgsz[0]}x{self.imgsz[1]}",
            f"  image AUROC {num(self.image_auroc)}  pixel AUROC {num(self.pixel_auroc)}  "
            f"AUPRO {num(self.aupro)}"
            f"  {self.ms_per_image:.1f} ms/image",
            f"  escape at false reject set on this set's good parts: {curve or 'n/a'}",
            self.operating_point.summary(),
        ]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def _nan_to_none(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def evaluate_anomaly(
    model_path: str | Path,
    eval_set: EvalSet,
    held_out: list[Path] | None = None,
    target_false_reject: float = 0.01,
    out_dir: str | Path | None = None,
    threads: int | None = 1,
) -> AnomalyReport:
    """Run the model over `eval_set` (and the held-out good images) and compute everything in the module doc.
    Without held-out images the threshold comes from the evaluation's good images (noted)."""
    from vision import load_model

    model = load_model(model_path, providers="cpu", threads=threads)
    if getattr(model, "task", None) != "anomaly":
        raise TrainingInputError(f"{model_path}: not an anomaly model")
    if not eval_set.good and not eval_set.defects and not held_out:
        raise TrainingInputError(f"evaluation set {eval_set.source}: no images")
    good = score_images(model, eval_set.good)
    bad = score_images(model, eval_set.defects)
    notes: list[str] = []
    held = score_images(model, held_out, keep_maps=False) if held_out else None
    if held is None or not len(held.scores):
        notes.append("no held-out good parts: threshold set on the evaluation's good parts (optimistic)")
        calib = good.scores
    else:
        calib = held.scores

    labels = np.r_[np.zeros(len(good.scores)), np.ones(len(bad.scores))]
    scores = np.r_[good.scores, bad.scores]
    img_auc = _nan_to_none(auroc(scores, labels))

    # pixel metrics over good images and the defect images that have masks
    mask_of = dict(zip(eval_set.defects, eval_set.masks))
    h, w = model.imgsz
    pix_maps, pix_masks = [], []
    for p, m in zip(bad.paths, bad.maps):
        mp = mask_of.get(p)
        if mp is not None:
            pix_maps.append(m)
            pix_masks.append(read_mask(mp, (h, w)))
    n_masked = len(pix_maps)
    pix_auc = pro = None
    if n_masked:
        all_maps = np.concatenate([good.maps, np.stack(pix_maps)])
        all_masks = np.concatenate([np.zeros(good.maps.shape, bool), np.stack(pix_masks)])
        pix_auc = _nan_to_none(auroc(all_maps, all_masks))
        pro = _nan_to_none(aupro(all_maps, all_masks))

    point = operating_point(calib, good.scores, bad.scores, target_false_reject)
    curve = (
        escape_at_false_reject(good.scores, bad.scores, FALSE_REJECT_TARGETS)
        if len(good.scores) and len(bad.scores)
        else {}
    )
    stats = {
        name: {
            "n": len(s),
            "min": float(s.min()),
            "median": float(np.median(s)),
            "max": float(s.max()),
        }
        for name, s in (("held_out_good", calib), ("good", good.scores), ("defect", bad.scores))
        if len(s)
    }
    all_ms = [good.ms_per_image] * len(good.paths) + [bad.ms_per_image] * len(bad.paths)
    report = AnomalyReport(
        model=str(model_path),
        data=eval_set.source,
        data_spec=dict(eval_set.spec),
        imgsz=(h, w),
        good_images=len(good.scores),
        defect_images=len(bad.scores),
        masked_images=n_masked,
        image_auroc=img_auc,
        pixel_auroc=pix_auc,
        aupro=pro,
        operating_point=point,
        escape_at_false_reject=curve,
        ms_per_image=float(np.mean(all_ms)) if all_ms else 0.0,
        score_stats=stats,
        notes=notes,
    )
    if out_dir is not None:
        from training.anomaly.plots import write_plots

        report.plots = write_plots(Path(out_dir), report, good, bad, calib, mask_of)
    return report
