"""The promotion gate for anomaly models: a new model goes on a line only if it is not worse than the line's
current anomaly model at the operating point, both measured through `vision` on the same evaluation set.

Compared, each beyond the tolerance:

- at each model's own operating point (the image threshold its card carries, which is what the line will
  run): the escape rate on the set's defect parts and the false-reject rate on its good parts;
- at the same false-reject rate for both (the threshold that rejects the target share of the set's good
  parts, default 1 %): the escape rate. This one is fair whatever the thresholds were set on.

`registry.promote` hands anomaly candidates (card `"task": "anomaly"`) to `promote_anomaly`. The line file's
`anomaly.path` (an anomaly model beside the detector) or else `model.path` (the line runs the anomaly model
alone) is rewritten round-trip (comments kept); the thresholds travel in the card, which `vision` reads.

Example:
    >>> new = GateSide("new.onnx", 0.95, escape_rate=0.10, false_reject_rate=0.02, image_threshold=0.6,
    ...                escape_at_target=0.12, false_reject_at_target=0.01)
    >>> old = GateSide("old.onnx", 0.90, escape_rate=0.30, false_reject_rate=0.00, image_threshold=0.7,
    ...                escape_at_target=0.30, false_reject_at_target=0.01)
    >>> compare(new, old, GateTolerance())
    (['false-reject rate 2.0% > 0.0% at its own operating point'], [])
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.anomaly.images import EvalSet, eval_set_from_path, eval_set_from_spec
from training.errors import TrainingInputError


@dataclass(frozen=True)
class GateTolerance:
    escape_rate: float = 0.0
    false_reject_rate: float = 0.0
    image_auroc: float = 0.0


@dataclass
class GateSide:
    model: str
    image_auroc: float | None
    escape_rate: float | None  # at its own threshold
    false_reject_rate: float | None  # at its own threshold
    image_threshold: float
    escape_at_target: float | None  # at the threshold giving the target false-reject rate on the set
    false_reject_at_target: float | None


@dataclass
class AnomalyGateResult:
    ran: bool
    why_not: str | None = None
    data: str | None = None
    target_false_reject_rate: float | None = None
    candidate: GateSide | None = None
    current: GateSide | None = None
    tolerance: GateTolerance = field(default_factory=GateTolerance)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if not self.ran:
            return f"gate did not run: {self.why_not}"

        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{100 * v:.1f}%"

        target = pct(self.target_false_reject_rate)
        rows = [f"anomaly gate on {self.data}:"]
        for label, s in (("candidate", self.candidate), ("current", self.current)):
            if s is not None:
                auc = "n/a" if s.image_auroc is None else f"{s.image_auroc:.3f}"
                rows.append(
                    f"  {label:<9} own threshold {s.image_threshold:.4f}: escape {pct(s.escape_rate)}, "
                    f"false reject {pct(s.false_reject_rate)}; at {target} false reject: escape "
                    f"{pct(s.escape_at_target)}; image AUROC {auc}  ({s.model})"
                )
        rows += [f"  worse: {f}" for f in self.failures] + [f"  note: {n}" for n in self.notes]
        return "\n".join(rows)


def measure(model_path: Path, eval_set: EvalSet, target: float) -> GateSide:
    """One model through `vision` on the set: rates at its own threshold and at the target false rejects."""
    from training.anomaly.evaluate import score_images
    from training.anomaly.metrics import auroc, escape_rate, false_reject_rate, threshold_for_false_reject
    from vision import load_model

    model = load_model(model_path, providers="cpu", threads=1)
    if getattr(model, "task", None) != "anomaly":
        raise TrainingInputError(f"{model_path}: not an anomaly model")
    good = score_images(model, eval_set.good, keep_maps=False).scores
    bad = score_images(model, eval_set.defects, keep_maps=False).scores
    t = float(model.image_threshold)
    t_target = threshold_for_false_reject(good, target) if len(good) else None
    auc = auroc(np.r_[good, bad], np.r_[np.zeros(len(good)), np.ones(len(bad))])
    return GateSide(
        model=str(model_path),
        image_auroc=float(auc) if np.isfinite(auc) else None,
        escape_rate=escape_rate(bad, t) if len(bad) else None,
        false_reject_rate=false_reject_rate(good, t) if len(good) else None,
        image_threshold=t,
        escape_at_target=escape_rate(bad, t_target) if len(bad) and t_target is not None else None,
        false_reject_at_target=false_reject_rate(good, t_target) if t_target is not None else None,
    )


def compare(cand: GateSide, cur: GateSide, tol: GateTolerance) -> tuple[list[str], list[str]]:
    """(failures, notes): where the candidate is worse than the current model beyond `tol`."""
    failures: list[str] = []
    notes: list[str] = []
    checks = (
        ("escape rate", cand.escape_rate, cur.escape_rate, tol.escape_rate, "at its own operating point"),
        ("false-reject rate", cand.false_reject_rate, cur.false_reject_rate, tol.false_reject_rate,
         "at its own operating point"),
        ("escape rate", cand.escape_at_target, cur.escape_at_target, tol.escape_rate,
         "at the same false-reject rate"),
    )  # fmt: skip
    for what, a, b, allowance, where in checks:
        if a is not None and b is not None and a > b + allowance + 1e-9:
            failures.append(f"{what} {100 * a:.1f}% > {100 * b:.1f}% {where}")
    if cand.escape_rate is None:
        notes.append("escape rates not compared: the set has no defect parts")
    if cand.false_reject_rate is None:
        notes.append("false-reject rates not compared: the set has no good parts")
    auc, auc_cur = cand.image_auroc, cur.image_auroc
    if auc is not None and auc_cur is not None and auc + tol.image_auroc < auc_cur - 1e-9:
        failures.append(f"image AUROC {auc:.3f} < {auc_cur:.3f}")
    return failures, notes


def gate_eval_set(card: dict[str, Any], data: str | Path | None) -> EvalSet | None:
    """`data` (MVTec root or reviews folder) or the evaluation set the candidate's card names, if here."""
    if data is not None:
        return eval_set_from_path(data)
    spec = (card.get("dataset") or {}).get("eval")
    if not spec:
        return None
    try:
        es = eval_set_from_spec(spec)
    except TrainingInputError:
        return None
    return es if es.good or es.defects else None


def promote_anomaly(
    candidate: Any,
    line_file: str | Path,
    data: str | Path | None,
    force: bool,
    reason: str,
    tolerance: GateTolerance | None = None,
) -> Any:
    """Put the anomaly model `candidate` (a `registry.RegisteredModel`) on the line, gated (module doc)."""
    from training.promotion import PromotionRefused, PromotionResult, edit_line_text, read_line, text_diff
    from vision import load_model

    tol = tolerance or GateTolerance()
    line = read_line(line_file)
    slot = (
        "anomaly" if isinstance(line.document.get("anomaly"), dict) else "model"
    )  # beside a detector or alone
    current_path = line.model_path
    if slot == "anomaly":
        current_path = Path(str(line.document["anomaly"].get("path", "")))
        if not current_path.is_absolute():
            current_path = (line.line_file.parent / current_path).resolve()
    current = current_path if current_path and current_path.is_file() else None
    if current is not None and current.resolve() == candidate.onnx.resolve():
        raise PromotionRefused(f"{line.line_file} already uses {candidate.onnx}")
    point = candidate.card.get("operating_point") or {}
    target = float(point.get("target_false_reject_rate") or 0.01)
    notes: list[str] = []
    why_not: str | None = None
    eval_set = None
    if current is None:
        why_not = f"the line's current {slot} model {current_path} is missing on this machine"
    elif getattr(load_model(current, providers="cpu"), "task", None) != "anomaly":
        raise PromotionRefused(
            f"{candidate.name} is an anomaly model but the line's model {current} is not: to run it beside "
            "the detector add an `anomaly:` section with its path to the line file (docs/anomaly.md)"
        )
    else:
        eval_set = gate_eval_set(candidate.card, data)
        if eval_set is None:
            why_not = "no evaluation set is available here (the card's is missing); pass --data MVTEC_ROOT"
    if why_not is not None:
        gate = AnomalyGateResult(False, why_not)
        if not force:
            raise PromotionRefused(
                f"cannot promote {candidate.name}: the gate cannot run because {why_not}; "
                "use --force with --reason to promote without it"
            )
        notes.append(f"forced without a gate: {why_not}")
    else:
        assert current is not None and eval_set is not None
        cand = measure(candidate.onnx, eval_set, target)
        cur = measure(current, eval_set, target)
        gate = AnomalyGateResult(True, None, eval_set.source, target, cand, cur, tol)
        gate.failures, gate.notes = compare(cand, cur, tol)
        if gate.failures:
            if not force:
                raise PromotionRefused(
                    f"{candidate.name} is worse than the line's current model on {eval_set.source}: "
                    + "; ".join(gate.failures)
                    + "; use --force (with --reason) to promote anyway\n"
                    + gate.summary()
                )
            notes.append("forced although worse: " + "; ".join(gate.failures))
    rel = os.path.relpath(candidate.onnx.resolve(), line.line_file.resolve().parent)
    before = line.line_file.read_text()
    after = edit_line_text(before, rel, None, "default", skip_classes=[]) if slot == "model" else None
    after = after if after is not None else _edit_anomaly_path(before, rel)
    line_model = line.document.get(slot) or {}
    overridden = [k for k in ("image_threshold", "pixel_threshold") if k in line_model]
    if overridden:
        notes.append(
            f"the line sets {', '.join(overridden)} itself, which wins over the card's thresholds: check them"
        )
    diff = text_diff(before, after, str(line.line_file))
    line.line_file.write_text(after)
    entry = {
        "line": str(line.line_file),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "slot": slot,
        "previous_model": str(current) if current else None,
        "forced": force,
        "reason": reason,
        "gate": gate.to_dict(),
        "thresholds": candidate.card.get("thresholds"),
        "notes": notes,
    }
    candidate.card.setdefault("promotions", []).append(entry)
    (candidate.folder / "model.json").write_text(json.dumps(candidate.card, indent=2) + "\n")
    msg = f"{line.line_file}: {slot}.path -> {rel}" + (f" ({'; '.join(notes)})" if notes else "")
    return PromotionResult(
        candidate.name,
        str(line.line_file),
        str(current) if current else None,
        None,
        None,
        force,
        msg,
        gate,
        candidate.card.get("thresholds"),
        diff,
    )


def _edit_anomaly_path(text: str, path: str) -> str:
    """The line file's text with `anomaly.path` replaced (round-trip YAML: comments and layout kept)."""
    import io

    from ruamel.yaml import YAML

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    rt.indent(mapping=2, sequence=4, offset=2)
    doc = rt.load(text)
    doc["anomaly"]["path"] = path
    buf = io.StringIO()
    rt.dump(doc, buf)
    return buf.getvalue()
