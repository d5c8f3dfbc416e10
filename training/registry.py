"""The model registry: a folder (`models/`) with one sub-folder per model holding `model.onnx` + `model.json`.

`promote` puts a model on a line: it checks the model's classes against the line's recipe rules, compares
it with the line's current model on the same evaluation set, and only then rewrites the line file's
`model.path` (comments and layout of the file are kept). Refusals raise `PromotionRefused`.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from training.errors import TrainingInputError

DEFAULT_REGISTRY = Path("models")


class PromotionRefused(TrainingInputError):
    """The model may not go on the line (wrong classes, or worse than the current model)."""


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


# ------------------------------------------------------------------------------------------ line file
@dataclass
class LineModelRef:
    line_file: Path
    document: dict[str, Any]
    model_path: Path | None  # absolute, as the line resolves it (relative to the line file)
    rule_classes: dict[str, list[str]]  # recipe -> class names its rules use


def read_line(line_file: str | Path) -> LineModelRef:
    from vision.rules import RecipeRules

    path = Path(line_file).expanduser()
    if not path.is_file():
        raise TrainingInputError(f"line file {path} does not exist")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TrainingInputError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict) or "path" not in doc["model"]:
        raise TrainingInputError(f"{path}: needs a 'model:' section with 'path:' (the line's ONNX file)")
    model_path = Path(str(doc["model"]["path"]))
    if not model_path.is_absolute():
        model_path = (path.parent / model_path).resolve()
    rule_classes: dict[str, list[str]] = {}
    for recipe, raw in (doc.get("recipes") or {"default": {}}).items():
        try:
            rules = RecipeRules.model_validate(raw or {})
        except ValueError as exc:
            raise TrainingInputError(f"{path}: recipes.{recipe} is not valid: {exc}") from exc
        rule_classes[str(recipe)] = list(rules.classes) + list(rules.ok_classes)
    return LineModelRef(path, doc, model_path, rule_classes)


def _replace_model_path(line_file: Path, new_value: str) -> None:
    """Rewrite only the `model.path` scalar in the file text, so comments and layout survive."""
    text = line_file.read_text()
    root = yaml.compose(text)
    for key, value in root.value:  # type: ignore[union-attr]
        if key.value == "model":
            for k2, v2 in value.value:
                if k2.value == "path":
                    start, end = v2.start_mark.index, v2.end_mark.index
                    line_file.write_text(text[:start] + json.dumps(new_value) + text[end:])
                    return
    raise TrainingInputError(f"{line_file}: could not find model.path to update")


# ------------------------------------------------------------------------------------------ promote
@dataclass
class PromotionResult:
    model: str
    line: str
    previous_model: str | None
    candidate_map50: float | None
    current_map50: float | None
    forced: bool
    message: str


def promote(
    model: str | Path,
    line_file: str | Path,
    registry: str | Path = DEFAULT_REGISTRY,
    data: str | Path | None = None,
    split: str | None = None,
    force: bool = False,
    reason: str = "",
    tolerance: float = 0.0,
) -> PromotionResult:
    """Point `line_file`'s model at `model`, if its classes fit the rules and it is not worse.

    "Worse" = lower mAP50 than the line's current model on the same evaluation set (`data`/`split`,
    default: the set named in the candidate's card), both run through `vision`. `force` overrides
    that comparison (never the class check) and is recorded in the card with `reason`.
    """
    from training.evaluate import evaluate
    from vision import Model

    candidate = resolve_model(model, registry)
    line = read_line(line_file)
    names = list(Model(candidate.onnx, providers="cpu").names.values())
    for recipe, used in line.rule_classes.items():
        unknown = [c for c in used if c not in names]
        if unknown:
            raise PromotionRefused(
                f"{candidate.name} cannot go on {line.line_file}: recipe {recipe!r} has rules for "
                f"{', '.join(unknown)}, which the model does not detect (it knows {', '.join(names)})"
            )
    current = line.model_path if line.model_path and line.model_path.is_file() else None
    if current is not None and current.resolve() == candidate.onnx.resolve():
        raise PromotionRefused(f"{line.line_file} already uses {candidate.onnx}")
    cand_map = cur_map = None
    notes = []
    if current is not None:
        current_names = list(Model(current, providers="cpu").names.values())
        if current_names != names and not any(line.rule_classes.values()):
            raise PromotionRefused(
                f"{candidate.name} detects {names} but the line's current model {current} detects "
                f"{current_names}, and the line has no class rules to say which are wanted"
            )
        ds = candidate.card.get("dataset", {})
        data = data or ds.get("data_yaml")
        split = split or ds.get("eval_split", "val")
        if data is None or not Path(data).exists():
            if not force:
                raise PromotionRefused(
                    f"cannot compare {candidate.name} with the line's current model: evaluation data "
                    f"{data or '(none in the card)'} is not available; pass --data, or --force to skip it"
                )
            notes.append("comparison skipped: no evaluation data")
        elif current_names != names:
            if not force:
                raise PromotionRefused(
                    f"cannot compare on the same set: the current model detects {current_names}, "
                    f"the candidate {names}; use --force to promote anyway"
                )
            notes.append("comparison skipped: different class lists")
        else:
            cand_map = evaluate(candidate.onnx, data, split=split).map50
            cur_map = evaluate(current, data, split=split).map50
            if cand_map + tolerance < cur_map:
                if not force:
                    raise PromotionRefused(
                        f"{candidate.name} is worse than the line's current model on {data} [{split}]: "
                        f"mAP50 {cand_map:.3f} < {cur_map:.3f}; use --force (with --reason) to promote anyway"
                    )
                notes.append(f"forced although worse: mAP50 {cand_map:.3f} < {cur_map:.3f}")
    rel = os.path.relpath(candidate.onnx.resolve(), line.line_file.resolve().parent)
    _replace_model_path(line.line_file, rel)
    entry = {
        "line": str(line.line_file),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "previous_model": str(current) if current else None,
        "forced": force,
        "reason": reason,
        "eval": {
            "data": str(data) if data else None,
            "split": split,
            "candidate_map50": cand_map,
            "previous_map50": cur_map,
        },
        "notes": notes,
    }
    candidate.card.setdefault("promotions", []).append(entry)
    (candidate.folder / "model.json").write_text(json.dumps(candidate.card, indent=2) + "\n")
    msg = f"{line.line_file}: model.path -> {rel}" + (f" ({'; '.join(notes)})" if notes else "")
    return PromotionResult(
        candidate.name, str(line.line_file), str(current) if current else None, cand_map, cur_map, force, msg
    )
