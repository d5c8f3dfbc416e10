"""The model registry: a folder (`models/`) with one sub-folder per model holding `model.onnx` + `model.json`.

`promote` puts a model on a line: it checks the model's classes against the line's recipe rules, runs the
gate (candidate and current model on the same evaluation set, compared at their operating points: escape
and false-reject rate per part, and mAP50), and only then rewrites the line file: `model.path` and the
operating point's per-class thresholds in the target recipe (comments and layout of the file are kept;
the diff is shown). Refusals raise `PromotionRefused`; a gate that cannot run refuses too, unless forced.

Gate tolerances (`GateTolerance`): none between independent trainings (a retrained model must be at least
as good); `PRECISION_VARIANT_TOLERANCE` between precision variants of one training (the INT8 file and its
FP32 twin listed in the same model card), which differ by quantization noise only.

The line file is read as plain YAML (`model.path`, `recipes.<name>` rules as in `vision.rules`), so the
training tools do not depend on the edge agent.

Example:
    >>> models = list_models("models")                       # doctest: +SKIP
    >>> promote("neu-det", "configs/lines/steel.yaml")        # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.errors import TrainingInputError
from training.promotion import (
    PromotionRefused,
    PromotionResult,
    edit_line_text,
    read_line,
    target_recipe,
    text_diff,
)

DEFAULT_REGISTRY = Path("models")


@dataclass
class RegisteredModel:
    name: str
    folder: Path
    onnx: Path
    card: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        classes = self.card.get("classes", {})
        return [classes[k] for k in sorted(classes, key=int)]

    def summary(self) -> str:
        fp32 = self.card.get("metrics", {}).get("fp32", {})
        m50 = fp32.get("map50")
        return (
            f"{self.name:<20} {self.card.get('task', '?'):<8} {','.join(self.classes)[:48]:<48} "
            f"{'mAP50 ' + format(m50, '.3f') if m50 is not None else 'not evaluated':<13} "
            f"{self.card.get('created', '')[:10]}"
        )


def resolve_model(model: str | Path, registry: str | Path = DEFAULT_REGISTRY) -> RegisteredModel:
    """A model by registry name, folder or .onnx path (its card `model.json` must sit beside it)."""
    given = Path(model).expanduser()
    candidates = [given, Path(registry) / str(model)]
    for c in candidates:
        folder = c.parent if c.suffix == ".onnx" else c
        card_path = folder / "model.json"
        if card_path.is_file():
            try:
                card = json.loads(card_path.read_text())
            except json.JSONDecodeError as exc:
                raise TrainingInputError(f"{card_path}: model card is not valid JSON ({exc})") from exc
            onnx = (
                c
                if c.suffix == ".onnx"
                else folder / card.get("files", {}).get("fp32", {}).get("file", "model.onnx")
            )
            if not onnx.is_file():
                raise TrainingInputError(f"{card_path}: its model file {onnx} is missing")
            return RegisteredModel(folder.name, folder, onnx, card)
    raise TrainingInputError(
        f"model {str(model)!r}: no model.json found at {' or '.join(str(c) for c in candidates)} "
        "(export one with `edge-inspect export`)"
    )


def list_models(registry: str | Path = DEFAULT_REGISTRY) -> list[RegisteredModel]:
    root = Path(registry)
    if not root.is_dir():
        raise TrainingInputError(f"model registry {root} does not exist")
    return [resolve_model(p.parent) for p in sorted(root.glob("*/model.json"))]


# ------------------------------------------------------------------------------------------ gate
@dataclass(frozen=True)
class GateTolerance:
    """How much worse than the current model a candidate may be and still pass the gate."""

    map50: float = 0.0
    escape_rate: float = 0.0
    false_reject_rate: float = 0.0

    def widened(self, other: GateTolerance) -> GateTolerance:
        return GateTolerance(
            max(self.map50, other.map50),
            max(self.escape_rate, other.escape_rate),
            max(self.false_reject_rate, other.false_reject_rate),
        )


# INT8 vs its FP32 twin: static quantization moves mAP50 by a few thousandths and can flip a part or two
# near a threshold; one point of mAP50 and one point of each rate is the documented allowance.
PRECISION_VARIANT_TOLERANCE = GateTolerance(map50=0.01, escape_rate=0.01, false_reject_rate=0.01)


@dataclass
class GateSide:
    model: str
    map50: float
    escape_rate: float | None
    false_reject_rate: float | None
    thresholds: dict[str, float]
    reached: bool


@dataclass
class GateResult:
    ran: bool
    why_not: str | None = None  # why the gate could not run
    data: str | None = None
    split: str | None = None
    target_escape_rate: float | None = None
    candidate: GateSide | None = None
    current: GateSide | None = None
    tolerance: GateTolerance = field(default_factory=GateTolerance)
    precision_variant: bool = False
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if not self.ran:
            return f"gate did not run: {self.why_not}"

        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{100 * v:.1f}%"

        rows = [f"gate on {self.data} [{self.split}], escape target {pct(self.target_escape_rate)}:"]
        for label, side in (("candidate", self.candidate), ("current", self.current)):
            if side is not None:
                rows.append(
                    f"  {label:<9} escape {pct(side.escape_rate):>6}  false reject "
                    f"{pct(side.false_reject_rate):>6}  mAP50 {side.map50:.3f}  ({side.model})"
                )
        if self.precision_variant:
            rows.append("  precision variants of one training: tolerance " + _fmt_tol(self.tolerance))
        rows += [f"  worse: {f}" for f in self.failures] + [f"  note: {n}" for n in self.notes]
        return "\n".join(rows)


def _fmt_tol(t: GateTolerance) -> str:
    return f"mAP50 {t.map50:g}, escape {t.escape_rate:g}, false reject {t.false_reject_rate:g}"


def _side(model: Path, report: Any) -> GateSide:
    point = report.operating_point or {}
    return GateSide(
        model=str(model),
        map50=float(report.map50),
        escape_rate=point.get("escape_rate"),
        false_reject_rate=point.get("false_reject_rate"),
        thresholds=dict(point.get("thresholds") or {}),
        reached=bool(point.get("reached", False)),
    )


def is_precision_variant(candidate: RegisteredModel, current: Path) -> bool:
    """True when the current file is another precision of the candidate's training (same model card)."""
    from vision.digest import file_sha256

    shas = {f.get("sha256") for f in candidate.card.get("files", {}).values()}
    return file_sha256(current) in shas and file_sha256(candidate.onnx) in shas


def run_gate(
    candidate: RegisteredModel,
    current: Path,
    data: str | Path,
    split: str,
    target: float,
    tolerance: GateTolerance,
) -> GateResult:
    """Both models through `vision` on one set, each at its operating point for `target`; compare."""
    from training.evaluate import evaluate

    variant = is_precision_variant(candidate, current)
    tol = tolerance.widened(PRECISION_VARIANT_TOLERANCE) if variant else tolerance
    cand = _side(candidate.onnx, evaluate(candidate.onnx, data, split=split, target_escape_rate=target))
    cur = _side(current, evaluate(current, data, split=split, target_escape_rate=target))
    gate = GateResult(True, None, str(data), split, target, cand, cur, tol, variant)
    gate.failures, gate.notes = compare_sides(cand, cur, tol)
    return gate


def compare_sides(cand: GateSide, cur: GateSide, tol: GateTolerance) -> tuple[list[str], list[str]]:
    """(failures, notes): where the candidate is worse than the current model beyond `tol`."""
    failures: list[str] = []
    notes: list[str] = []
    if cand.escape_rate is not None and cur.escape_rate is not None:
        if cand.escape_rate > cur.escape_rate + tol.escape_rate + 1e-9:
            failures.append(
                f"escape rate {100 * cand.escape_rate:.1f}% > {100 * cur.escape_rate:.1f}% "
                "at the operating point"
            )
    else:
        notes.append("escape rates not compared: the set has no NG parts")
    if cand.false_reject_rate is not None and cur.false_reject_rate is not None:
        if cand.false_reject_rate > cur.false_reject_rate + tol.false_reject_rate + 1e-9:
            failures.append(
                f"false-reject rate {100 * cand.false_reject_rate:.1f}% > "
                f"{100 * cur.false_reject_rate:.1f}% at the operating point"
            )
    else:
        notes.append("false-reject rates not compared: the set has no defect-free parts")
    if cand.map50 + tol.map50 < cur.map50 - 1e-9:
        failures.append(f"mAP50 {cand.map50:.3f} < {cur.map50:.3f}")
    return failures, notes


# ------------------------------------------------------------------------------------------ line edits
def card_thresholds(candidate: RegisteredModel) -> tuple[dict[str, float] | None, float | None]:
    """The operating point's thresholds (and target) for the file being promoted, from its card: each
    precision variant has its own (`metrics.fp32.operating_point`, `metrics.int8.operating_point`)."""
    files = candidate.card.get("files", {})
    variant = next((v for v, f in files.items() if f.get("file") == candidate.onnx.name), None)
    point = (candidate.card.get("metrics", {}).get(variant) or {}).get("operating_point") if variant else None
    if not point:
        return None, None
    return dict(point["thresholds"]), float(point["target_escape_rate"])


# ------------------------------------------------------------------------------------------ promote
def promote(
    model: str | Path,
    line_file: str | Path,
    registry: str | Path = DEFAULT_REGISTRY,
    data: str | Path | None = None,
    split: str | None = None,
    force: bool = False,
    reason: str = "",
    tolerance: float | GateTolerance = 0.0,
    recipe: str | None = None,
    write_thresholds: bool = True,
) -> PromotionResult:
    """Put `model` on `line_file` if its classes fit the rules and the gate passes (see the module doc).

    The gate runs on `data`/`split` (default: the set named in the candidate's card). It refuses when the
    candidate is worse at the operating point (escape rate, false-reject rate) or in mAP50, beyond the
    tolerance, and also when it cannot run (the current model file is missing here, no evaluation data,
    different class lists). `force` (with `reason`, recorded in the card) overrides the gate, never the
    class check. The operating point's thresholds go into `recipe` (default: the line's active recipe).
    """
    from vision import Model

    tol = tolerance if isinstance(tolerance, GateTolerance) else GateTolerance(map50=float(tolerance))
    candidate = resolve_model(model, registry)
    if candidate.card.get("task") == "anomaly":  # its own gate: escape / false reject at the operating point
        from training.anomaly.gate import GateTolerance as AnomalyTolerance
        from training.anomaly.gate import promote_anomaly

        anomaly_tol = AnomalyTolerance(tol.escape_rate, tol.false_reject_rate)
        return promote_anomaly(candidate, line_file, data, force, reason, anomaly_tol)
    line = read_line(line_file)
    names = list(Model(candidate.onnx, providers="cpu").names.values())
    for recipe_name, used in line.rule_classes.items():
        unknown = [c for c in used if c not in names]
        if unknown:
            raise PromotionRefused(
                f"{candidate.name} cannot go on {line.line_file}: recipe {recipe_name!r} has rules for "
                f"{', '.join(unknown)}, which the model does not detect (it knows {', '.join(names)})"
            )
    recipe_name = target_recipe(line.document, recipe)
    current = line.model_path if line.model_path and line.model_path.is_file() else None
    if current is not None and current.resolve() == candidate.onnx.resolve():
        raise PromotionRefused(f"{line.line_file} already uses {candidate.onnx}")
    thresholds, target = card_thresholds(candidate)
    target = target if target is not None else 0.01
    ds = candidate.card.get("dataset", {})
    data = data or ds.get("data_yaml")
    split = split or ds.get("eval_split", "val")
    notes: list[str] = []

    why_not: str | None = None
    if current is None:
        why_not = f"the line's current model {line.model_path} is missing on this machine"
    else:
        current_names = list(Model(current, providers="cpu").names.values())
        if current_names != names and not any(line.rule_classes.values()):
            raise PromotionRefused(
                f"{candidate.name} detects {names} but the line's current model {current} detects "
                f"{current_names}, and the line has no class rules to say which are wanted"
            )
        if data is None or not Path(data).exists():
            why_not = f"evaluation data {data or '(none in the card)'} is not available here; pass --data"
        elif current_names != names:
            why_not = f"the current model detects {current_names}, the candidate {names}: no common set"
    if why_not is not None:
        gate = GateResult(False, why_not)
        if not force:
            raise PromotionRefused(
                f"cannot promote {candidate.name}: the gate cannot run because {why_not}; "
                "use --force with --reason to promote without it"
            )
        notes.append(f"forced without a gate: {why_not}")
    else:
        assert current is not None and data is not None
        gate = run_gate(candidate, current, data, split, target, tol)
        if gate.failures:
            if not force:
                raise PromotionRefused(
                    f"{candidate.name} is worse than the line's current model on {data} [{split}]: "
                    + "; ".join(gate.failures)
                    + f" (tolerance {_fmt_tol(gate.tolerance)}); "
                    "use --force (with --reason) to promote anyway" + "\n" + gate.summary()
                )
            notes.append("forced although worse: " + "; ".join(gate.failures))

    if write_thresholds and thresholds is None and gate.ran and gate.candidate is not None:
        thresholds = gate.candidate.thresholds or None
        if thresholds:
            notes.append(f"the card has no operating point: thresholds chosen on the gate set {data}")
    if write_thresholds and not thresholds:
        notes.append("no operating point known: recipe thresholds left as they are")
    rel = os.path.relpath(candidate.onnx.resolve(), line.line_file.resolve().parent)
    before = line.line_file.read_text()
    rules_doc = (line.document.get("recipes") or {}).get(recipe_name) or {}
    after = edit_line_text(
        before,
        rel,
        thresholds if write_thresholds else None,
        recipe_name,
        skip_classes=list(rules_doc.get("ok_classes") or []),
    )
    diff = text_diff(before, after, str(line.line_file))
    line.line_file.write_text(after)
    entry = {
        "line": str(line.line_file),
        "recipe": recipe_name,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "previous_model": str(current) if current else None,
        "forced": force,
        "reason": reason,
        "gate": gate.to_dict(),
        "thresholds_written": thresholds if write_thresholds else None,
        "eval": {
            "data": str(data) if data else None,
            "split": split,
            "candidate_map50": gate.candidate.map50 if gate.candidate else None,
            "previous_map50": gate.current.map50 if gate.current else None,
        },
        "notes": notes,
    }
    candidate.card.setdefault("promotions", []).append(entry)
    (candidate.folder / "model.json").write_text(json.dumps(candidate.card, indent=2) + "\n")
    msg = f"{line.line_file}: model.path -> {rel}" + (f" ({'; '.join(notes)})" if notes else "")
    return PromotionResult(
        candidate.name,
        str(line.line_file),
        str(current) if current else None,
        gate.candidate.map50 if gate.candidate else None,
        gate.current.map50 if gate.current else None,
        force,
        msg,
        gate,
        thresholds if write_thresholds else None,
        diff,
    )
