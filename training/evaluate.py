"""Evaluate an exported ONNX model through our `vision` runtime: the same code the edge runs.

Box metrics come from Ultralytics' own, well-tested implementation (`match_predictions`, `ap_per_class`,
`ConfusionMatrix`), fed with the predictions our runtime makes, so the numbers are comparable with what
`yolo val` prints for the .pt. On top of that, the numbers a factory cares about, per image:

- escape rate: NG images (at least one labelled defect) judged OK (no detection >= the confidence);
- false-reject rate: OK images (no labelled defect) judged NG;
- the highest confidence whose escape rate meets a target (and its false-reject rate);
- the operating point: per-class thresholds for the target escape rate at the lowest false-reject rate
  (`training.operating_point`), the trade-off curve and its plot (`tradeoff.png`).

Example (needs the `train` extra):
    >>> report = evaluate("models/demo/model.onnx", "runs/demo/data", split="val")   # doctest: +SKIP
    >>> report.map50, report.escape_rate, report.false_reject_rate                     # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from training.datasets import class_names, load_data_yaml, read_labels, split_images
from training.errors import TrainingInputError
from training.operating_point import (
    CURVE_TARGETS,
    OperatingPoint,
    choose_operating_point,
    plot_tradeoff,
    rates,
    tradeoff_curve,
)

if TYPE_CHECKING:
    from vision.runtime import Runtime

EVAL_CONF = 0.001  # like `yolo val`: keep low-confidence boxes so the PR curve reaches full recall


@dataclass
class ClassMetrics:
    name: str
    images: int
    instances: int
    precision: float  # at the max-F1 confidence (as Ultralytics reports)
    recall: float
    ap50: float
    ap50_95: float
    precision_at_conf: float  # at the decision confidence
    recall_at_conf: float


@dataclass
class EvalReport:
    model: str
    model_sha256: str
    data: str
    split: str
    images: int
    instances: int
    map50: float
    map50_95: float
    precision: float
    recall: float
    classes: list[ClassMetrics]
    decision_conf: float
    ng_images: int
    ok_images: int
    escape_rate: float | None  # None when the split has no NG images
    false_reject_rate: float | None  # None when the split has no OK images
    target_escape_rate: float
    conf_for_target_escape: float | None  # None when no confidence reaches the target
    false_reject_at_target: float | None
    confusion_matrix: list[list[int]]  # [predicted][true], last row/col = background
    ms_per_image: float
    providers: list[str]
    plots: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    operating_point: dict[str, Any] | None = None  # OperatingPoint.to_dict() for target_escape_rate
    tradeoff: list[dict[str, float]] = field(default_factory=list)  # one-threshold sweep
    tradeoff_points: list[dict[str, Any]] = field(default_factory=list)  # per-class points, CURVE_TARGETS
    runtime: str = "onnxruntime:CPU:f32"  # vision.runtime.Runtime that ran the model
    # escapes / false rejects at given per-class thresholds (the card's operating point, for the gate)
    at_thresholds: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{100 * v:.1f}%"

        lines = [
            f"{self.model} on {self.data} [{self.split}]: {self.images} images, {self.instances} boxes",
            f"mAP50 {self.map50:.3f}  mAP50-95 {self.map50_95:.3f}  "
            f"P {self.precision:.3f}  R {self.recall:.3f}"
            f"  ({self.ms_per_image:.1f} ms/image on {self.providers[0]})",
            f"{'class':<18}{'images':>7}{'boxes':>7}{'P':>7}{'R':>7}{'AP50':>7}{'AP50-95':>9}",
        ]
        lines += [
            f"{c.name:<18}{c.images:>7}{c.instances:>7}{c.precision:>7.3f}{c.recall:>7.3f}{c.ap50:>7.3f}"
            f"{c.ap50_95:>9.3f}"
            for c in self.classes
        ]
        lines.append(
            f"At confidence {self.decision_conf:g}: escape rate {pct(self.escape_rate)} "
            f"of {self.ng_images} NG "
            f"images, false-reject rate {pct(self.false_reject_rate)} of {self.ok_images} OK images"
        )
        if self.conf_for_target_escape is None:
            lines.append(f"No confidence reaches an escape rate <= {pct(self.target_escape_rate)}.")
        else:
            lines.append(
                f"Escape rate <= {pct(self.target_escape_rate)} at confidence <= "
                f"{self.conf_for_target_escape:.3f} "
                f"(false-reject rate there {pct(self.false_reject_at_target)})"
            )
        if self.ok_images == 0:
            lines.append(
                "NO DEFECT-FREE IMAGES in this split: false-reject rates cannot be measured here; "
                "evaluate on a split that has OK parts before choosing thresholds for a line."
            )
        if self.operating_point is not None:
            lines.append(OperatingPoint(**self.operating_point).summary())
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def conf_for_escape_target(
    ng_scores: np.ndarray, ok_scores: np.ndarray, target: float
) -> tuple[float | None, float | None]:
    """Highest confidence threshold whose image escape rate is <= target, and the false-reject rate there.

    An image's score is its highest detection confidence (0 with no detection); an NG image escapes at
    threshold t when its score < t. Returns (None, None) if even the lowest kept score misses the target.

    >>> conf_for_escape_target(np.array([0.9, 0.8, 0.3, 0.0]), np.array([0.5, 0.1]), 0.25)
    (0.3, 0.5)
    """
    if len(ng_scores) == 0:
        return None, None
    candidates = np.unique(ng_scores[ng_scores > 0])[::-1]  # descending
    for t in candidates:
        if np.mean(ng_scores < t) <= target:
            frr = float(np.mean(ok_scores >= t)) if len(ok_scores) else None
            return float(t), frr
    return None, None


def evaluate(
    model_path: str | Path,
    data: str | Path,
    split: str = "val",
    decision_conf: float = 0.25,
    target_escape_rate: float = 0.01,
    iou: float = 0.7,
    out_dir: str | Path | None = None,
    providers: str = "cpu",
    threads: int | None = None,
    limit: int | None = None,
    runtime: Runtime | str | None = None,
    thresholds: dict[str, float] | None = None,
    cache_dir: str | Path | bool | None = None,
) -> EvalReport:
    """Run `model_path` (ONNX) over a dataset split and compute detection and factory metrics.

    `runtime` (`vision.runtime.Runtime` or "openvino:CPU:bf16"): which backend, device and precision run
    the model (default ONNX Runtime FP32). `thresholds` (per class): also count the escapes and false
    rejects there (`EvalReport.at_thresholds`), e.g. at the card's operating point.
    Writes `evaluation.json`, `pr_curve.png` and `confusion_matrix.png` into `out_dir` when given.
    """
    import torch

    from training.offline import ultralytics_offline

    ultralytics_offline()
    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils.metrics import ConfusionMatrix, ap_per_class, box_iou

    from vision import Model, read_image
    from vision.runtime import Runtime

    run_on = Runtime.parse(runtime) if isinstance(runtime, str) else (runtime or Runtime())
    data_yaml, cfg = load_data_yaml(data)
    names = class_names(cfg)
    model = Model(
        model_path, providers=providers, threads=threads, backend=run_on.backend, device=run_on.device,
        precision=run_on.precision, cache_dir=cache_dir,
    )
    if model.task != "detect":
        raise TrainingInputError(f"{model_path}: is a {model.task} model; evaluate handles detection models")
    if [model.names[k] for k in sorted(model.names)] != [names[k] for k in sorted(names)]:
        raise TrainingInputError(
            f"{model_path} classes {list(model.names.values())} do not match {data_yaml} classes "
            f"{list(names.values())} (same names in the same order are needed)"
        )
    images = split_images(data_yaml, split)
    if limit:
        images = images[:limit]
    if not images:
        raise TrainingInputError(f"{data_yaml}: split {split!r} has no images")

    iouv = torch.linspace(0.5, 0.95, 10)
    matcher = SimpleNamespace(iouv=iouv)  # match_predictions only needs the IoU thresholds
    confusion = ConfusionMatrix(names=names, task="detect")
    stats: dict[str, list[np.ndarray]] = {"tp": [], "conf": [], "pred_cls": [], "target_cls": []}
    image_scores, image_is_ng = [], []
    class_scores = np.zeros((len(images), len(names)))  # best confidence per class per image
    class_present = np.zeros((len(images), len(names)), dtype=bool)
    images_per_class = np.zeros(len(names), dtype=int)
    total_ms = 0.0
    model.warmup(1)
    for row, path in enumerate(images):
        img = read_image(path)
        h, w = img.shape[:2]
        pred = model.predict(img, conf=EVAL_CONF, iou=iou)
        total_ms += sum(pred.timing_ms.values())
        det = pred.detections
        order = np.argsort(-det.confidence, kind="stable")
        boxes = torch.from_numpy(det.xyxy[order].astype(np.float32))
        conf = torch.from_numpy(det.confidence[order].astype(np.float32))
        cls = torch.from_numpy(det.class_id[order].astype(np.float32))
        labels = read_labels(path)
        gt_cls = torch.from_numpy(labels.class_ids.astype(np.float32))
        cxcywh = labels.boxes_norm * np.array([w, h, w, h])
        gt_xyxy = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], 1)
        gt_boxes = torch.from_numpy(gt_xyxy.astype(np.float32))
        for c in set(labels.class_ids.tolist()):
            images_per_class[c] += 1
        if len(det) and len(gt_cls):
            correct = BaseValidator.match_predictions(matcher, cls, gt_cls, box_iou(gt_boxes, boxes))
        else:
            correct = torch.zeros((len(det), len(iouv)), dtype=torch.bool)
        stats["tp"].append(correct.numpy())
        stats["conf"].append(conf.numpy())
        stats["pred_cls"].append(cls.numpy())
        stats["target_cls"].append(gt_cls.numpy())
        confusion.process_batch(
            {"bboxes": boxes, "conf": conf, "cls": cls},
            {"bboxes": gt_boxes, "cls": gt_cls},
            conf=decision_conf,
        )
        image_scores.append(float(conf.max()) if len(conf) else 0.0)
        image_is_ng.append(len(gt_cls) > 0)
        np.maximum.at(class_scores[row], det.class_id.astype(int), det.confidence.astype(np.float64))
        class_present[row, labels.class_ids.astype(int)] = True

    cat = {k: np.concatenate(v, 0) for k, v in stats.items()}
    notes: list[str] = []
    nc = len(names)
    per_class: list[ClassMetrics] = []
    instances = np.bincount(cat["target_cls"].astype(int), minlength=nc)
    map50 = map50_95 = mp = mr = 0.0
    pr_x, pr_y, present = np.linspace(0, 1, 1000), np.zeros((0, 1000)), np.zeros(0, dtype=int)
    if len(cat["target_cls"]):
        _, _, p, r, _, ap, present, p_curve, r_curve, _, pr_x, pr_y = ap_per_class(
            cat["tp"], cat["conf"], cat["pred_cls"], cat["target_cls"], plot=False, names=names
        )
        map50, map50_95 = float(ap[:, 0].mean()), float(ap.mean())
        mp, mr = float(p.mean()), float(r.mean())
        row_of = {int(c): i for i, c in enumerate(present)}
        grid = np.linspace(0, 1, 1000)
        for c in range(nc):
            if c not in row_of:
                notes.append(f"class {names[c]!r} has no labelled boxes in this split; left out of the mean")
                continue
            i = row_of[c]
            per_class.append(
                ClassMetrics(
                    name=names[c],
                    images=int(images_per_class[c]),
                    instances=int(instances[c]),
                    precision=float(p[i]),
                    recall=float(r[i]),
                    ap50=float(ap[i, 0]),
                    ap50_95=float(ap[i].mean()),
                    precision_at_conf=float(np.interp(decision_conf, grid, p_curve[i])),
                    recall_at_conf=float(np.interp(decision_conf, grid, r_curve[i])),
                )
            )
    else:
        notes.append("the split has no labelled boxes: box metrics are 0 by definition")

    scores, is_ng = np.array(image_scores), np.array(image_is_ng, dtype=bool)
    ng_scores, ok_scores = scores[is_ng], scores[~is_ng]
    escape = float(np.mean(ng_scores < decision_conf)) if len(ng_scores) else None
    frr = float(np.mean(ok_scores >= decision_conf)) if len(ok_scores) else None
    if not len(ok_scores):
        notes.append("the split has no defect-free (OK) images: false-reject rate cannot be measured")
    t_conf, t_frr = conf_for_escape_target(ng_scores, ok_scores, target_escape_rate)
    point = choose_operating_point(class_scores, is_ng, names, target_escape_rate, class_present)
    point.per_class_recall = _recall_at(point.thresholds, cat, names, instances)
    others = [
        choose_operating_point(class_scores, is_ng, names, t, class_present)
        for t in sorted(set(CURVE_TARGETS) | {target_escape_rate})
    ]

    report = EvalReport(
        model=str(model_path),
        model_sha256=model.sha256,
        data=str(data_yaml),
        split=split,
        images=len(images),
        instances=int(instances.sum()),
        map50=map50,
        map50_95=map50_95,
        precision=mp,
        recall=mr,
        classes=per_class,
        decision_conf=decision_conf,
        ng_images=int(is_ng.sum()),
        ok_images=int((~is_ng).sum()),
        escape_rate=escape,
        false_reject_rate=frr,
        target_escape_rate=target_escape_rate,
        conf_for_target_escape=t_conf,
        false_reject_at_target=t_frr,
        confusion_matrix=confusion.matrix.astype(int).tolist(),
        ms_per_image=total_ms / len(images),
        providers=list(model.providers),
        notes=notes,
        operating_point=point.to_dict(),
        tradeoff=tradeoff_curve(class_scores, is_ng),
        tradeoff_points=[p.to_dict() for p in others],
        runtime=str(model.runtime),
        at_thresholds=_at_thresholds(thresholds, class_scores, is_ng, names),
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        report.plots = {
            "pr_curve": str(_plot_pr(out / "pr_curve.png", pr_x, pr_y, present, names, report)),
            "confusion_matrix": str(_plot_confusion(out / "confusion_matrix.png", confusion.matrix, names)),
            "tradeoff": str(
                plot_tradeoff(
                    out / "tradeoff.png",
                    report.tradeoff,
                    others,
                    point,
                    f"Escape vs false reject per part, {Path(report.model).name} on {report.split}",
                )
            ),
        }
        (out / "evaluation.json").write_text(json.dumps(report.to_dict(), indent=2))
    return report


def _at_thresholds(
    thresholds: dict[str, float] | None, class_scores: np.ndarray, is_ng: np.ndarray, names: dict[int, str]
) -> dict[str, Any] | None:
    """Escapes and false rejects per part at fixed per-class thresholds (a class without one: never NG)."""
    if thresholds is None:
        return None
    levels = np.array([thresholds.get(names[c], np.inf) for c in range(len(names))], dtype=np.float64)
    escapes, false_rejects = rates(class_scores, is_ng, levels)
    return {
        "thresholds": dict(thresholds),
        "escapes": escapes,
        "false_rejects": false_rejects,
        "ng_parts": int(is_ng.sum()),
        "ok_parts": int((~is_ng).sum()),
    }


def _recall_at(
    thresholds: dict[str, float], cat: dict[str, np.ndarray], names: dict[int, str], instances: np.ndarray
) -> dict[str, float]:
    """Per class: share of labelled boxes matched (IoU 0.5) by a detection at or above its threshold."""
    out: dict[str, float] = {}
    if not len(cat["conf"]):
        return {names[c]: 0.0 for c in range(len(names)) if instances[c]}
    tp50 = cat["tp"][:, 0].astype(bool)
    for c in range(len(names)):
        if not instances[c]:
            continue
        hit = tp50 & (cat["pred_cls"].astype(int) == c) & (cat["conf"] >= thresholds[names[c]])
        out[names[c]] = float(hit.sum() / instances[c])
    return out


def _plot_pr(
    path: Path, x: np.ndarray, y: np.ndarray, present: np.ndarray, names: dict[int, str], report: EvalReport
) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display on a factory PC or CI
    import matplotlib.pyplot as plt

    ap50 = {c.name: c.ap50 for c in report.classes}
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    for row, c in enumerate(present):
        ax.plot(x, y[row], linewidth=1, label=f"{names[int(c)]} {ap50.get(names[int(c)], 0):.3f}")
    if len(present):
        ax.plot(x, y.mean(0), color="black", linewidth=2.5, label=f"all classes mAP50 {report.map50:.3f}")
    ax.set(
        xlabel="Recall",
        ylabel="Precision",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title=f"Precision-recall (IoU 0.5), {Path(report.model).name} on {report.split}",
    )
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_confusion(path: Path, matrix: np.ndarray, names: dict[int, str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [names[k] for k in sorted(names)] + ["background"]
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.8 + 0.7 * n), dpi=110)
    ax.imshow(matrix, cmap="Blues")
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                ax.text(
                    j,
                    i,
                    int(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black",
                )
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set(xlabel="True", ylabel="Predicted", title="Confusion matrix (boxes)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
