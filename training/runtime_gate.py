"""Evaluate a runtime (backend, device, precision) against ONNX Runtime FP32 on the card's evaluation split
and write the verdict into the model card, for this CPU type (`vision.runtime_gate` reads and judges it).

Both sides run in the same call on the same images, so the comparison does not lean on numbers measured
elsewhere. Detectors: `training.evaluate.evaluate` (mAP50, escapes at the card's operating point).
Anomaly models: image AUROC and escapes at the card's image threshold, on good and NG image folders.

Example (needs the `train` extra, and `openvino` for OpenVINO runtimes):
    >>> entry = gate_runtime("models/demo/model.onnx", "openvino:CPU:bf16", data="runs/demo/test/data.yaml")
    ...                                                                            # doctest: +SKIP
    >>> entry["passed"], entry["reason"]                                           # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from training.errors import TrainingInputError


def _versions(runtime: Any) -> dict[str, str]:
    import onnxruntime

    versions = {"onnxruntime": onnxruntime.__version__}
    if runtime.backend == "openvino":
        from vision.openvino_session import _openvino

        versions["openvino"] = _openvino().__version__
    return versions


def _detector_metrics(
    model: Path, runtime: Any, data: Path, split: str, thresholds: dict[str, float] | None, limit: int | None
) -> dict[str, Any]:
    from training.evaluate import evaluate

    report = evaluate(model, data, split=split, runtime=runtime, thresholds=thresholds, limit=limit)
    at = report.at_thresholds or {}
    return {
        "images": report.images,
        "map50": report.map50,
        "map50_95": report.map50_95,
        "escapes": at.get("escapes"),
        "false_rejects": at.get("false_rejects"),
        "ng_parts": at.get("ng_parts"),
        "ok_parts": at.get("ok_parts"),
        "ms_per_image": round(report.ms_per_image, 3),
    }


def _anomaly_metrics(model_path: Path, runtime: Any, good: list[Path], defects: list[Path]) -> dict[str, Any]:
    """Image AUROC, and escapes / false rejects at the model's image threshold (its card's, else its
    metadata's: what the line judges with)."""
    from training.anomaly.evaluate import score_images
    from training.anomaly.metrics import auroc
    from vision import load_model

    model = load_model(
        model_path, providers="cpu", backend=runtime.backend, device=runtime.device,
        precision=runtime.precision,
    )
    ok, ng = score_images(model, good, keep_maps=False), score_images(model, defects, keep_maps=False)
    labels = np.r_[np.zeros(len(ok.scores)), np.ones(len(ng.scores))]
    auc = auroc(np.r_[ok.scores, ng.scores], labels)
    threshold = model.image_threshold  # type: ignore[union-attr]
    return {
        "images": len(labels),
        "image_auroc": None if not np.isfinite(auc) else float(auc),
        "image_threshold": threshold,
        "escapes": int((ng.scores < threshold).sum()),
        "false_rejects": int((ok.scores >= threshold).sum()),
        "ng_parts": len(ng.scores),
        "ok_parts": len(ok.scores),
        "ms_per_image": round(float(np.mean([ok.ms_per_image, ng.ms_per_image])), 3),
    }


def gate_runtime(
    model_path: str | Path,
    runtime: Any,
    *,
    data: str | Path | None = None,
    split: str | None = None,
    eval_good: list[Path] | None = None,
    eval_defects: list[Path] | None = None,
    limit: int | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Evaluate `runtime` (a `vision.runtime.Runtime` or "openvino:CPU:bf16") and ONNX Runtime FP32 on the
    same images; the gate's entry (also written into the card unless `write=False`).

    Detectors: `data` (data.yaml; default the card's `dataset.data_yaml`) and `split` (default its
    `eval_split`). Anomaly models: `eval_good` and `eval_defects` image lists.
    """
    from vision.digest import file_sha256
    from vision.runtime import REFERENCE, Runtime, cpu_identity
    from vision.runtime_gate import CARD_KEY, card_path, judge, read_card, variant_file

    model_path = Path(model_path)
    run_on = Runtime.parse(runtime) if isinstance(runtime, str) else runtime
    card = read_card(model_path)
    if card is None:
        raise TrainingInputError(f"{card_path(model_path)}: no model card; the gate writes its result there")
    task = card.get("task", "detect")
    t0 = time.perf_counter()
    if task == "anomaly":
        if not eval_good or not eval_defects:
            raise TrainingInputError(
                "an anomaly model's gate needs good and NG images (--eval-good, --eval-defects)"
            )
        reference = _anomaly_metrics(model_path, REFERENCE, eval_good, eval_defects)
        candidate = _anomaly_metrics(model_path, run_on, eval_good, eval_defects)
        source: dict[str, Any] = {"good": len(eval_good), "defects": len(eval_defects)}
    else:
        dataset = card.get("dataset") or {}
        data = Path(data or dataset.get("data_yaml") or "")
        split = split or dataset.get("eval_split") or "val"
        if not data or not Path(data).exists():
            raise TrainingInputError(
                f"evaluation data {str(data) or '(none in the card)'} not found: give --data (the card's "
                f"evaluation set, {dataset.get('citation') or dataset.get('data_yaml') or 'see model.json'})"
            )
        thresholds = (card.get("operating_point") or {}).get("thresholds")
        reference = _detector_metrics(model_path, REFERENCE, data, split, thresholds, limit)
        candidate = _detector_metrics(model_path, run_on, data, split, thresholds, limit)
        from training.datasets import dataset_hash

        # the content, not the path, says whether this is the card's evaluation set
        source = {"data": str(data), "split": split, "limit": limit, "content_sha256": dataset_hash(data)}
        if dataset.get("content_sha256") and source["content_sha256"] != dataset["content_sha256"]:
            source["note"] = "not the card's evaluation set (content sha256 differs)"
    passed, reason = judge(reference, candidate, task)
    cpu = cpu_identity()
    variant = variant_file(model_path, run_on)
    entry = {
        "runtime": str(run_on),
        "passed": passed,
        "reason": reason,
        "model_sha256": file_sha256(model_path),
        "variant_sha256": file_sha256(variant) if variant is not None else None,
        "evaluated_on": source,
        "reference": reference,
        "candidate": candidate,
        "versions": _versions(run_on),
        "seconds": round(time.perf_counter() - t0, 1),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if write:
        path = card_path(model_path)
        card = json.loads(path.read_text())  # again: keep whatever changed while we evaluated
        per_cpu = card.setdefault(CARD_KEY, {}).setdefault(str(cpu["key"]), {})
        per_cpu["cpu"] = {"name": cpu["name"], "flags": cpu["flags"]}
        per_cpu.setdefault("pairs", {})[str(run_on)] = entry
        path.write_text(json.dumps(card, indent=2) + "\n")
    return entry
