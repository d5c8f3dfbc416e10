"""From a training run to a model folder: ONNX file, evaluation, plots and the model card `model.json`.

The card of an anomaly model (`"task": "anomaly"`) carries what `vision` reads, `"thresholds": {"image",
"pixel"}`, and what people and the promotion gate read: the operating point (threshold from held-out good
parts for a target false-reject rate, the escape rate it gives), image/pixel AUROC and AUPRO, the escape rate
at 1/2/5 % false reject, the time per image, the synthetic defects it was trained on and the training run.

Example (needs the `train` extra):
    >>> card = package_model("runs/anomaly/exp", "models/my-line", eval_set)     # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

from training.anomaly.evaluate import AnomalyReport, evaluate_anomaly
from training.anomaly.export import export_onnx, set_metadata
from training.anomaly.images import EvalSet
from training.anomaly.train import load_net
from training.errors import TrainingInputError
from training.export import CARD_VERSION, _cpu_name, _opset, library_versions

LAYOUT = "NCHW RGB float32 0-1, resized to H x W (no letterbox); grey replicated to 3 channels"


def held_out_paths(run: Path) -> list[Path]:
    listing = run / "held_out.txt"
    if not listing.is_file():
        return []
    return [Path(line) for line in listing.read_text().splitlines() if line.strip()]


def metrics_entry(report: AnomalyReport, card_dir: Path) -> dict[str, Any]:
    d = report.to_dict()
    d.pop("model", None)
    d["plots"] = {k: str(Path(v).resolve().relative_to(card_dir.resolve())) for k, v in report.plots.items()}
    return d


def build_card(
    onnx_path: Path,
    report: AnomalyReport | None,
    run: Path,
    description: str = "",
    citation: str = "",
    version: str | None = None,
) -> dict[str, Any]:
    from training.anomaly.statistics import is_statistics_run, load_statistics
    from vision.digest import file_sha256

    if is_statistics_run(run):
        _, cfg, info = load_statistics(run)
        method = (
            f"statistics: per-pixel {cfg.centre} and spread of the aligned good images, line average "
            f"{info['fit'].get('line', cfg.line)} px, polarity {cfg.polarity} (docs/anomaly.md)"
        )
    else:
        _, cfg, info = load_net(run)
        method = "segmentation network on good images with synthetic defects (docs/training.md)"
    now = dt.datetime.now(dt.timezone.utc)
    point = report.operating_point if report is not None else None
    card: dict[str, Any] = {
        "card_version": CARD_VERSION,
        "name": onnx_path.parent.name,
        "version": version or now.strftime("%Y%m%d-%H%M%S"),
        "description": description,
        "task": "anomaly",
        "classes": {"0": "anomaly"},
        "input": {"imgsz": list(cfg.imgsz), "layout": LAYOUT, "dynamic_batch": True},
        "files": {
            "fp32": {
                "file": onnx_path.name,
                "sha256": file_sha256(onnx_path),
                "bytes": onnx_path.stat().st_size,
                "opset": _opset(onnx_path),
            }
        },
        "thresholds": (
            {"image": point.image_threshold, "pixel": point.pixel_threshold} if point is not None else None
        ),
        "operating_point": (
            {"variant": "fp32", "file": onnx_path.name, "data": report.data, **point.to_dict()}
            if report is not None and point is not None
            else None
        ),
        "metrics": {"fp32": metrics_entry(report, onnx_path.parent)} if report is not None else {},
        "speed": {
            "ms_per_image": report.ms_per_image if report is not None else None,
            "threads": 1,
            "cpu": _cpu_name(),
            "note": "ONNX Runtime session run at batch 1 during evaluation (bench/anomaly.py for the bench)",
        },
        "dataset": {
            "good": cfg.good,
            "eval": report.data_spec if report else None,
            "eval_source": report.data if report else None,
            "citation": citation,
        },
        "training": {
            "run": str(run),
            "method": method,
            "steps": info["step"],
            "train_hours": round(info["train_s"] / 3600, 3),
            "cpu_hours": round(info["cpu_s"] / 3600, 3),
            "config": cfg.to_dict(),
            "cpu_s": round(info["cpu_s"], 1),
            **({"fit": info["fit"]} if "fit" in info else {}),
        },
        "versions": library_versions(),
        "created": now.isoformat(timespec="seconds"),
        "promotions": [],
    }
    return card


def package_model(
    run: str | Path,
    out_dir: str | Path,
    eval_set: EvalSet | None,
    target_false_reject: float = 0.01,
    description: str = "",
    citation: str = "",
    name: str | None = None,
    held_out: list[Path] | None = None,
) -> tuple[Path, AnomalyReport | None]:
    """Export `run` into `out_dir` (model.onnx, eval/ plots, model.json); returns (card path, report).

    The thresholds come from the run's held-out good images (or `held_out`); with no evaluation set the
    held-out images alone set them (no escape rate can be given)."""
    run = Path(run)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(run, out / "model.onnx", name=name or out.name)
    held = held_out if held_out is not None else held_out_paths(run)
    if eval_set is None:
        if not held:
            raise TrainingInputError(
                f"{run}: no held-out good images and no evaluation set: nothing to set the threshold on"
            )
        eval_set = EvalSet(source=f"held-out good images of {run}")
    eval_dir = out / "eval"
    if eval_dir.exists():
        shutil.rmtree(eval_dir)
    report = evaluate_anomaly(onnx_path, eval_set, held, target_false_reject, out_dir=eval_dir)
    point = report.operating_point
    card = build_card(onnx_path, report, run, description, citation)
    set_metadata(
        onnx_path,
        {
            "image_threshold": repr(point.image_threshold),
            "pixel_threshold": repr(point.pixel_threshold),
            "version": card["version"],
        },
    )
    # the metadata changed the file: its hash in the card must be the final file's
    from vision.digest import file_sha256

    card["files"]["fp32"].update(sha256=file_sha256(onnx_path), bytes=onnx_path.stat().st_size)
    card_path = out / "model.json"
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card_path, report
