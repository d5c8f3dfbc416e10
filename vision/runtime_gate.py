"""The accuracy gate: a runtime other than ONNX Runtime FP32 runs a model on a line only once it has been
evaluated on the card's evaluation split, on this CPU type, and lost nothing that matters.

What passes (`judge`), against ONNX Runtime FP32 on the same images in the same run:
- detectors: at most 1 point of mAP50 lost (`MAX_MAP50_LOSS`), and at the card's operating point (its
  per-class thresholds) no more escaped NG parts than the reference;
- anomaly models (when the card has their metrics): at most 0.01 image AUROC lost, and at the card's image
  threshold no more escaped NG parts.

The results live in the model card (`model.json` beside the file) under `runtimes`, one entry per CPU
type (`vision.runtime.cpu_identity`: model name + the flags that matter) and runtime:

    "runtimes": {"AMD EPYC|634ad476cf": {"cpu": {...}, "pairs": {"openvino:CPU:bf16": {entry}}}}

An entry names the exact files it judged (sha256 of the ONNX file, and of the INT8 file where one is
used), so a new model or a new quantisation needs a new evaluation. `training.runtime_gate` writes entries
(`edge-inspect model gate MODEL --runtime R`); this module only reads and judges them.

Example:
    >>> judge({"map50": 0.95, "escapes": 2}, {"map50": 0.945, "escapes": 2}, "detect")[0]
    True
    >>> judge({"map50": 0.95, "escapes": 2}, {"map50": 0.93, "escapes": 2}, "detect")[1]
    'mAP50 0.950 -> 0.930 (lost 2.00 pt, at most 1 allowed); escapes at the operating point 2 -> 2'
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vision.runtime import REFERENCE, Runtime, cpu_identity, ort_int8_path

CARD_KEY = "runtimes"
MAX_MAP50_LOSS = 0.01  # 1 point of mAP50
MAX_AUROC_LOSS = 0.01
MAX_ADDED_ESCAPES = 0


@dataclass(frozen=True)
class GateDecision:
    """Whether `runtime` may run the model here; `reason` in words; `command` evaluates it (when refused
    for want of an evaluation)."""

    runtime: Runtime
    allowed: bool
    reason: str
    command: str | None = None
    entry: dict[str, Any] | None = None


def card_path(model_path: str | Path) -> Path:
    return Path(model_path).parent / "model.json"


def read_card(model_path: str | Path) -> dict[str, Any] | None:
    path = card_path(model_path)
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def variant_file(model_path: str | Path, runtime: Runtime) -> Path | None:
    """The file whose bytes a runtime's INT8 runs (None: it runs the ONNX file itself)."""
    if runtime.precision != "int8":
        return None
    if runtime.backend == "onnxruntime":
        return ort_int8_path(model_path)
    from vision.openvino_session import int8_ir_path

    return int8_ir_path(model_path).with_suffix(".bin")


def judge(reference: dict[str, Any], candidate: dict[str, Any], task: str) -> tuple[bool, str]:
    """(passed, reason) for a candidate's metrics against the reference's (same images, same run)."""
    problems, notes = [], []
    if task == "anomaly":
        ref_auc, auc = reference.get("image_auroc"), candidate.get("image_auroc")
        if ref_auc is not None and auc is not None:
            text = f"image AUROC {ref_auc:.4f} -> {auc:.4f}"
            (problems if ref_auc - auc > MAX_AUROC_LOSS + 1e-12 else notes).append(text)
    else:
        ref_map, cand_map = float(reference["map50"]), float(candidate["map50"])
        loss = (ref_map - cand_map) * 100
        allowed = MAX_MAP50_LOSS * 100
        text = f"mAP50 {ref_map:.3f} -> {cand_map:.3f} (lost {loss:.2f} pt, at most {allowed:g} allowed)"
        (problems if ref_map - cand_map > MAX_MAP50_LOSS + 1e-12 else notes).append(text)
    ref_esc, esc = reference.get("escapes"), candidate.get("escapes")
    if ref_esc is not None and esc is not None:
        text = f"escapes at the operating point {ref_esc} -> {esc}"
        (problems if esc - ref_esc > MAX_ADDED_ESCAPES else notes).append(text)
    return (not problems, "; ".join(problems + notes))  # what failed first, then what held


def evaluate_command(model_path: str | Path, runtime: Runtime, card: dict[str, Any] | None) -> str:
    """The command that evaluates `runtime` on the card's evaluation split and writes the result."""
    model = shlex.quote(str(model_path))
    if (card or {}).get("task") == "anomaly":
        return f"edge-inspect model gate {model} --runtime {runtime} --eval-good GOOD --eval-defects NG"
    dataset = (card or {}).get("dataset") or {}
    data = shlex.quote(str(dataset.get("data_yaml") or "DATA.yaml"))
    split = dataset.get("eval_split") or "val"
    return f"edge-inspect model gate {model} --runtime {runtime} --data {data} --split {split}"


def gate_entry(card: dict[str, Any] | None, runtime: Runtime, cpu_key: str) -> dict[str, Any] | None:
    pairs = (((card or {}).get(CARD_KEY) or {}).get(cpu_key) or {}).get("pairs") or {}
    return pairs.get(str(runtime))


def check_runtime(
    model_path: str | Path, runtime: Runtime, cpu: dict[str, Any] | None = None
) -> GateDecision:
    """The gate for one model file and runtime on this CPU type (ONNX Runtime FP32 always passes)."""
    from vision.digest import file_sha256

    if runtime == REFERENCE:
        return GateDecision(runtime, True, "the reference runtime")
    model_path = Path(model_path)
    cpu = cpu or cpu_identity()
    card = read_card(model_path)
    command = evaluate_command(model_path, runtime, card)
    if card is None:
        return GateDecision(
            runtime, False, f"{model_path}: no model card (model.json) to hold its evaluation", command
        )
    entry = gate_entry(card, runtime, str(cpu["key"]))
    where = f"{cpu['name']} ({', '.join(map(str, cpu['flags'])) or 'no relevant flags'})"
    if entry is None:
        return GateDecision(
            runtime,
            False,
            f"{runtime} was not evaluated for {model_path.name} on this CPU type, {where}",
            command,
        )
    if entry.get("model_sha256") != file_sha256(model_path):
        return GateDecision(
            runtime, False, f"{runtime} was evaluated on another version of {model_path.name}", command, entry
        )
    variant = variant_file(model_path, runtime)
    if variant is not None:
        if not variant.is_file():
            return GateDecision(runtime, False, f"{variant.name} is missing", command, entry)
        if entry.get("variant_sha256") != file_sha256(variant):
            return GateDecision(
                runtime, False, f"{variant.name} changed since {runtime} was evaluated", command, entry
            )
    if not entry.get("passed"):
        return GateDecision(
            runtime, False, f"{runtime} failed the accuracy gate: {entry.get('reason')}", None, entry
        )
    return GateDecision(runtime, True, f"{runtime} passed: {entry.get('reason')}", None, entry)


def allowed_runtimes(model_path: str | Path, candidates: list[Runtime]) -> list[GateDecision]:
    """The gate's decision for each candidate, in order."""
    return [check_runtime(model_path, r) for r in candidates]
