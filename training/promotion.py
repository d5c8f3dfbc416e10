"""What every promotion gate shares (`training.registry.promote` for detectors, `training.anomaly.gate`
for anomaly models): the refusal, the result, and the line file read as plain YAML and rewritten in place
with its comments and layout kept.

Example:
    >>> text_diff("a: 1\\n", "a: 2\\n", "line.yaml").splitlines()[0]
    '--- line.yaml (before)'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from training.errors import TrainingInputError

if TYPE_CHECKING:
    from training.registry import GateResult


class PromotionRefused(TrainingInputError):
    """The model may not go on the line (wrong classes, or worse than the current model)."""


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


def target_recipe(doc: dict[str, Any], recipe: str | None) -> str:
    recipes = doc.get("recipes") or {}
    if recipe is not None:
        if recipe not in recipes:
            raise TrainingInputError(
                f"recipe {recipe!r} is not in the line file (it has {', '.join(recipes)})"
            )
        return recipe
    return str(doc.get("active_recipe") or next(iter(recipes), "default"))


def edit_line_text(
    text: str,
    model_path: str,
    thresholds: dict[str, float] | None,
    recipe: str,
    skip_classes: list[str],
) -> str:
    """The line file's text with a new `model.path` and the thresholds in `recipes.<recipe>.classes`.

    Round-trip YAML: comments, order and flow style survive; only the changed values differ. The model's
    own `conf` is lowered when a threshold is below it (detections under `conf` never reach the rules).
    """
    import io

    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    rt.indent(mapping=2, sequence=4, offset=2)
    doc = rt.load(text)
    model = doc["model"]
    model["path"] = model_path
    if thresholds:
        recipes = doc.get("recipes")
        if recipes is None:
            doc["recipes"] = recipes = CommentedMap()
        if recipes.get(recipe) is None:
            recipes[recipe] = CommentedMap()
        rules = recipes[recipe]
        if rules.get("classes") is None:
            rules["classes"] = CommentedMap()
        classes = rules["classes"]
        for name, t in thresholds.items():
            if name in skip_classes:
                continue
            if classes.get(name) is None:
                entry = CommentedMap()
                entry.fa.set_flow_style()
                classes[name] = entry
            classes[name]["min_confidence"] = round(float(t), 3)
        lowest = min(t for n, t in thresholds.items() if n not in skip_classes) if thresholds else None
        conf = float(model.get("conf", 0.25))
        if lowest is not None and lowest < conf:
            if "conf" in model:
                model["conf"] = round(lowest, 3)
            else:
                model.insert(list(model).index("path") + 1, "conf", round(lowest, 3))
    buf = io.StringIO()
    rt.dump(doc, buf)
    return buf.getvalue()


def text_diff(before: str, after: str, name: str) -> str:
    import difflib

    return "".join(
        difflib.unified_diff(
            before.splitlines(True), after.splitlines(True), f"{name} (before)", f"{name} (after)"
        )
    )


# ------------------------------------------------------------------------------------------ result
@dataclass
class PromotionResult:
    model: str
    line: str
    previous_model: str | None
    candidate_map50: float | None
    current_map50: float | None
    forced: bool
    message: str
    gate: GateResult | None = None
    thresholds: dict[str, float] | None = None
    diff: str = ""
