"""Recipe rules: turn a model's `Detections` into a verdict OK/NG with the reasons, as pure functions.

A recipe says, per defect class, what counts: minimum confidence, minimum/maximum size (the longest side
of the box, in pixels or in millimetres with a px/mm scale), regions of interest (include/exclude polygons,
judged on the box centre) and how many defects of that class a good part may have (`max_count`, default 0).

Example:
    >>> import numpy as np
    >>> from vision.detections import Detections
    >>> d = Detections(
    ...     xyxy=np.array([[10, 10, 30, 14], [50, 50, 52, 52]], dtype=np.float32),
    ...     confidence=np.array([0.9, 0.8], dtype=np.float32),
    ...     class_id=np.array([0, 1]),
    ...     names={0: "scratch", 1: "pit"},
    ... )
    >>> rules = RecipeRules(px_per_mm=10, classes={"pit": ClassRule(min_size=0.5, size_unit="mm")})
    >>> judgement = judge(d, rules)
    >>> judgement.verdict, judgement.reasons
    ('NG', ['scratch: 1 found, at most 0 allowed'])
    >>> judgement.counted.tolist()  # the 0.2 mm pit is below its 0.5 mm minimum
    [True, False]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vision.detections import Detections

SizeUnit = Literal["px", "mm"]
Polygon = list[tuple[float, float]]


class ClassRule(BaseModel):
    """What counts as a defect of one class. Unset fields fall back to the recipe's defaults."""

    model_config = ConfigDict(extra="forbid")

    min_confidence: float | None = Field(None, ge=0, le=1, description="ignore weaker detections")
    min_size: float | None = Field(None, ge=0, description="ignore defects whose longest side is smaller")
    max_size: float | None = Field(None, ge=0, description="ignore defects whose longest side is larger")
    size_unit: SizeUnit = Field("px", description="unit of min/max_size; mm needs the recipe's px_per_mm")
    max_count: int | None = Field(None, ge=0, description="a good part may have at most this many")

    @model_validator(mode="after")
    def _sizes_ordered(self) -> ClassRule:
        if self.min_size is not None and self.max_size is not None and self.min_size > self.max_size:
            raise ValueError(f"min_size {self.min_size} is larger than max_size {self.max_size}")
        return self


class Roi(BaseModel):
    """Regions of interest, polygons in image pixels [[x, y], ...]: a defect counts only if its box centre
    lies inside one `include` polygon (when any is given) and inside no `exclude` polygon."""

    model_config = ConfigDict(extra="forbid")

    include: list[Polygon] = Field(default_factory=list)
    exclude: list[Polygon] = Field(default_factory=list)

    @field_validator("include", "exclude")
    @classmethod
    def _at_least_three_points(cls, polygons: list[Polygon]) -> list[Polygon]:
        for i, polygon in enumerate(polygons):
            if len(polygon) < 3:
                raise ValueError(f"polygon {i} has {len(polygon)} points; a polygon needs at least 3")
        return polygons


class RecipeRules(BaseModel):
    """All the rules of one recipe."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    min_confidence: float = Field(0.25, ge=0, le=1, description="default minimum confidence for every class")
    max_count: int = Field(0, ge=0, description="default number of defects per class a good part may have")
    px_per_mm: float | None = Field(None, gt=0, description="image scale, needed for sizes in mm")
    ok_classes: list[str] = Field(
        default_factory=list, description="classes that are not defects (e.g. 'ok' of a classifier, 'part')"
    )
    classes: dict[str, ClassRule] = Field(default_factory=dict, description="per-class rules by class name")
    roi: Roi = Field(default_factory=Roi, description="regions of interest for every camera")
    camera_roi: dict[str, Roi] = Field(default_factory=dict, description="per-camera ROI, replaces `roi`")

    @model_validator(mode="after")
    def _mm_needs_scale(self) -> RecipeRules:
        for name, rule in self.classes.items():
            if rule.size_unit == "mm" and self.px_per_mm is None and (rule.min_size or rule.max_size):
                raise ValueError(f"class {name!r} gives sizes in mm but the recipe has no px_per_mm scale")
        return self

    def rule_for(self, class_name: str) -> ClassRule:
        return self.classes.get(class_name, ClassRule())

    def roi_for(self, camera: str | None) -> Roi:
        if camera is not None and camera in self.camera_roi:
            return self.camera_roi[camera]
        return self.roi

    def unknown_classes(self, names: Iterable[str]) -> list[str]:
        """Class names used by these rules that the model does not know (typos, wrong model)."""
        known = set(names)
        used = list(self.classes) + list(self.ok_classes)
        return [c for c in used if c not in known]


@dataclass(frozen=True)
class Judgement:
    """The verdict for one set of detections: `counted[i]` says whether detection i counted."""

    verdict: Literal["OK", "NG"]
    reasons: list[str]
    counted: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)


def longest_side_px(detections: Detections) -> np.ndarray:
    return np.maximum(detections.width, detections.height)


def points_in_polygons(points: np.ndarray, polygons: Sequence[Polygon]) -> np.ndarray:
    """Boolean (N,): whether each (x, y) point lies inside (or on the edge of) any of the polygons."""
    inside = np.zeros(len(points), dtype=bool)
    for polygon in polygons:
        contour = np.asarray(polygon, dtype=np.float32).reshape(-1, 1, 2)
        for i, (x, y) in enumerate(points):
            if not inside[i] and cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0:
                inside[i] = True
    return inside


def countable(detections: Detections, rules: RecipeRules, camera: str | None = None) -> np.ndarray:
    """Boolean (N,): which detections count as defects under `rules` (confidence, size, ROI, ok_classes)."""
    n = len(detections)
    keep = np.ones(n, dtype=bool)
    if n == 0:
        return keep
    names = detections.class_names
    size_px = longest_side_px(detections)
    for i, name in enumerate(names):
        if name in rules.ok_classes:
            keep[i] = False
            continue
        rule = rules.rule_for(name)
        min_conf = rule.min_confidence if rule.min_confidence is not None else rules.min_confidence
        if detections.confidence[i] < min_conf:
            keep[i] = False
            continue
        size = float(size_px[i])
        if rule.size_unit == "mm" and rules.px_per_mm:
            size /= rules.px_per_mm
        if (rule.min_size is not None and size < rule.min_size) or (
            rule.max_size is not None and size > rule.max_size
        ):
            keep[i] = False
    roi = rules.roi_for(camera)
    if roi.include or roi.exclude:
        centres = (detections.xyxy[:, 0:2] + detections.xyxy[:, 2:4]) / 2
        if roi.include:
            keep &= points_in_polygons(centres, roi.include)
        if roi.exclude:
            keep &= ~points_in_polygons(centres, roi.exclude)
    return keep


def judge(
    detections: Detections,
    rules: RecipeRules,
    camera: str | None = None,
    counted: np.ndarray | None = None,
) -> Judgement:
    """Verdict for one image (or, with `counted` precomputed per camera, for merged detections of a part).

    NG when some class has more counted defects than its `max_count`; each such class gives one reason.
    """
    if counted is None:
        counted = countable(detections, rules, camera)
    counts: dict[str, int] = {}
    for name, keep in zip(detections.class_names, counted, strict=True):
        if keep:
            counts[name] = counts.get(name, 0) + 1
    reasons = []
    for name, count in sorted(counts.items()):
        rule = rules.rule_for(name)
        allowed = rule.max_count if rule.max_count is not None else rules.max_count
        if count > allowed:
            reasons.append(f"{name}: {count} found, at most {allowed} allowed")
    return Judgement(verdict="NG" if reasons else "OK", reasons=reasons, counted=counted, counts=counts)


def judge_cameras(
    per_camera: Mapping[str, Detections], rules: RecipeRules
) -> tuple[Judgement, dict[str, np.ndarray]]:
    """One verdict for a part seen by several cameras: counts add up across cameras.

    Returns the part's judgement and, per camera, which of its detections counted.
    """
    counted_by_camera = {cam: countable(d, rules, cam) for cam, d in per_camera.items()}
    parts = list(per_camera.values())
    if not parts:
        return judge(Detections.empty(), rules), counted_by_camera
    # the rules read boxes, never masks: merging without them stacks no (N, H, W) arrays per part
    merged = Detections.merge([replace(d, mask=None) for d in parts])
    merged_counted = (
        np.concatenate([counted_by_camera[c] for c in per_camera]) if len(merged) else np.zeros(0, dtype=bool)
    )
    return judge(merged, rules, counted=merged_counted), counted_by_camera


__all__ = [
    "ClassRule",
    "Judgement",
    "RecipeRules",
    "Roi",
    "countable",
    "judge",
    "judge_cameras",
    "longest_side_px",
    "points_in_polygons",
]
