"""Setup for integrators: change a recipe's ROIs and class rules, see what it would have done, save the
line YAML with its comments and key order kept, validated as `config check` does.

The what-if re-judges recent journaled results: every result keeps all the model's detections (those
that did not count too), so new rules can be applied to them without running the model again. The
baseline is the same results re-judged with the rules the line runs now (not the journaled verdicts,
which older rules may have made), so "no change" reports no change. Only a
confidence threshold below the model's own `conf` cannot be judged this way (those detections were never
made); the answer says so.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from contract.result import InspectionResult
from vision.detections import Detections
from vision.rules import RecipeRules, judge_cameras

Point = tuple[float, float]


class ClassSetup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_confidence: float | None = Field(None, ge=0, le=1)
    min_size: float | None = Field(None, ge=0)
    max_count: int | None = Field(None, ge=0)


class RoiSetup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include: list[list[Point]] = Field(default_factory=list, max_length=32)
    exclude: list[list[Point]] = Field(default_factory=list, max_length=32)


class RecipeSetup(BaseModel):
    """What the setup page sends for one recipe: its default confidence, per-class rules, ROIs."""

    model_config = ConfigDict(extra="forbid")

    recipe: str = Field(min_length=1, max_length=64)
    min_confidence: float | None = Field(None, ge=0, le=1)
    classes: dict[str, ClassSetup] = Field(default_factory=dict)
    camera_roi: dict[str, RoiSetup] = Field(default_factory=dict)


class SetupError(ValueError):
    """The proposed change cannot be saved; `issues` lists every reason."""

    def __init__(self, issues: list[str]) -> None:
        super().__init__("; ".join(issues))
        self.issues = issues


def _yaml():
    from ruamel.yaml import YAML

    y = YAML()  # round trip: comments, key order and quoting survive
    y.preserve_quotes = True
    y.width = 110
    y.indent(mapping=2, sequence=4, offset=2)  # "  - item" under its key, as our YAML files are written
    return y


def _flow(seq: list) -> Any:
    from ruamel.yaml.comments import CommentedSeq

    out = CommentedSeq(seq)
    out.fa.set_flow_style()
    return out


def _number(value: float) -> float | int:
    """4.0 is written 4, as a person would."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _polygons(polys: list[list[Point]]) -> Any:
    from ruamel.yaml.comments import CommentedSeq

    out = CommentedSeq()
    for poly in polys:
        out.append(
            _flow([_flow([_number(round(float(x), 1)), _number(round(float(y), 1))]) for x, y in poly])
        )
    return out


def _roi_node(roi: RoiSetup) -> dict[str, Any] | None:
    node: dict[str, Any] = {}
    if roi.include:
        node["include"] = _polygons(roi.include)
    if roi.exclude:
        node["exclude"] = _polygons(roi.exclude)
    return node or None


def apply_setup(text: str, setup: RecipeSetup, cameras: list[str]) -> str:
    """The line file's text with `setup` written into `recipes.<recipe>`; everything else untouched."""
    from ruamel.yaml.comments import CommentedMap

    y = _yaml()
    data = y.load(text)
    recipes = data.get("recipes") if isinstance(data, dict) else None
    if recipes is None or setup.recipe not in recipes:
        raise SetupError([f"the line file has no recipe {setup.recipe!r}"])
    recipe = recipes[setup.recipe]
    if recipe is None:
        recipe = recipes[setup.recipe] = CommentedMap()
    if setup.min_confidence is not None:
        recipe["min_confidence"] = _number(setup.min_confidence)
    classes = recipe.get("classes")
    for name, rule in setup.classes.items():
        wanted = rule.model_dump(exclude_none=True)
        if classes is None:
            if not wanted:
                continue
            classes = recipe["classes"] = CommentedMap()
        entry = classes.get(name)
        if entry is None:
            if not wanted:
                continue
            entry = classes[name] = CommentedMap()
            entry.fa.set_flow_style()
        for key in ("min_confidence", "min_size", "max_count"):
            if key in wanted:
                entry[key] = _number(wanted[key])
            elif key in entry:
                del entry[key]
        if not entry:
            del classes[name]
    if classes is not None and not classes:
        del recipe["classes"]
    camera_roi = recipe.get("camera_roi")
    for cam, roi in setup.camera_roi.items():
        node = _roi_node(roi)
        per_camera = len(cameras) > 1 or (camera_roi is not None and cam in camera_roi)
        if per_camera:
            if camera_roi is None:
                if node is None:
                    continue
                camera_roi = recipe["camera_roi"] = CommentedMap()
            if node is None:
                camera_roi.pop(cam, None)
            else:
                camera_roi[cam] = node
        elif node is None:
            recipe.pop("roi", None)
        else:
            recipe["roi"] = node
    if camera_roi is not None and not camera_roi:
        del recipe["camera_roi"]
    out = io.StringIO()
    y.dump(data, out)
    return out.getvalue()


def validate_line_text(line_file: Path, text: str, line_name: str):
    """Validate `text` as `line_file` would be (same folder, so relative paths mean the same), with the
    model check of `config check`. Returns the LoadedLine; raises SetupError with every issue."""
    from contract.yamlconf import ConfigError
    from edge_agent.config import load_line
    from edge_agent.inspector import validate_line_model

    fd, tmp = tempfile.mkstemp(prefix=f".{line_file.stem}.", suffix=".yaml", dir=line_file.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            loaded = load_line(tmp)
        except ConfigError as exc:
            raise SetupError([str(i).replace(tmp, str(line_file)) for i in exc.issues]) from None
        if loaded.config.name != line_name:
            raise SetupError([f"the line is named {loaded.config.name!r}; renaming needs an agent restart"])
        issues = validate_line_model(loaded)
        if issues:
            raise SetupError([str(i).replace(tmp, str(line_file)) for i in issues])
        return loaded
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` in one step (the hot-reload watcher never sees half a file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    with contextlib.suppress(OSError):
        os.chmod(tmp, path.stat().st_mode & 0o777)
    os.replace(tmp, path)


def unified_diff(before: str, after: str, name: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            f"{name} (running)",
            f"{name} (new)",
        )
    )


def _detections(result: InspectionResult, names: dict[int, str]) -> dict[str, Detections]:
    per_camera: dict[str, list] = {f.camera: [] for f in result.frames}
    for d in result.defects:
        per_camera.setdefault(d.camera, []).append(d)
    out = {}
    for cam, defects in per_camera.items():
        if not defects:
            out[cam] = Detections.empty(names)
            continue
        out[cam] = Detections(
            xyxy=np.array([d.xyxy for d in defects], dtype=np.float32),
            confidence=np.array([d.confidence for d in defects], dtype=np.float32),
            class_id=np.array([d.class_id for d in defects], dtype=np.int64),
            names={**names, **{d.class_id: d.class_name for d in defects}},
        )
    return out


def what_if(
    results: list[InspectionResult],
    rules: RecipeRules,
    names: dict[int, str],
    model_conf: float,
    *,
    image_score_judged: bool = False,
    running_rules: RecipeRules | None = None,
) -> dict[str, Any]:
    """How `rules` would have judged `results` against how `running_rules` (the rules the line runs now)
    judge them, so that proposing no change reports no change even when older results were journaled
    under older rules. Without `running_rules`, against the journaled verdicts. On a line whose anomaly
    model's image score makes a part NG by itself (`image_score_judged`), that stays so whatever the rules
    (they judge its regions, class "anomaly", as detections)."""
    ok_to_ng, ng_to_ok, judged, skipped = [], [], 0, 0
    for r in results:
        if not r.frames:  # an NG for a missing frame or an error: no detections to judge
            skipped += 1
            continue
        detections = _detections(r, names)
        judgement, _ = judge_cameras(detections, rules)
        by_score = [a for a in r.anomaly if a.anomalous] if image_score_judged else []
        if running_rules is None:
            before, before_reason = r.verdict, r.reasons[0] if r.reasons else ""
        else:
            running, _ = judge_cameras(detections, running_rules)
            before = "NG" if by_score else running.verdict
            before_reason = running.reasons[0] if running.reasons else (r.reasons[0] if r.reasons else "")
        judged += 1
        if before == "OK" and judgement.verdict == "NG":
            ok_to_ng.append({"seq": r.seq, "part_id": r.part_id, "reason": judgement.reasons[0]})
        elif before == "NG" and judgement.verdict == "OK" and not by_score:
            ng_to_ok.append({"seq": r.seq, "part_id": r.part_id, "reason": before_reason})
    # anomaly regions have no detection threshold (the pixel threshold chose them): left out here
    given = [c.min_confidence for n, c in rules.classes.items() if n != "anomaly"]
    lowest = min([rules.min_confidence, *(v for v in given if v is not None)])
    notes = []
    if lowest < model_conf:
        notes.append(
            f"confidence {lowest:g} is below the model's own threshold {model_conf:g}: detections between "
            "them were never made, so this what-if cannot count them (lower model.conf to see them)"
        )
    if skipped:
        notes.append(f"{skipped} result(s) without frames (camera or inference errors) left out")
    return {
        "judged": judged,
        "ok_to_ng": len(ok_to_ng),
        "ng_to_ok": len(ng_to_ok),
        "examples_ok_to_ng": ok_to_ng[:12],
        "examples_ng_to_ok": ng_to_ok[:12],
        "summary": (
            f"Over the last {judged} parts this change would have turned {len(ok_to_ng)} OK part(s) NG "
            f"and {len(ng_to_ok)} NG part(s) OK."
        ),
        "notes": notes,
    }
