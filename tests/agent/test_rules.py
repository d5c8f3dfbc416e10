"""Recipe rules (vision/rules.py): pure functions over real `Detections` structs."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from vision.detections import Detections
from vision.rules import ClassRule, RecipeRules, Roi, countable, judge, judge_cameras

NAMES = {0: "scratch", 1: "pit", 2: "crack", 3: "stain", 4: "ok"}


def dets(rows: list[tuple[str, float, tuple[float, float, float, float]]]) -> Detections:
    ids = {v: k for k, v in NAMES.items()}
    if not rows:
        return Detections.empty(NAMES)
    return Detections(
        xyxy=np.array([r[2] for r in rows], dtype=np.float32),
        confidence=np.array([r[1] for r in rows], dtype=np.float32),
        class_id=np.array([ids[r[0]] for r in rows]),
        names=NAMES,
    )


def test_no_detection_is_ok() -> None:
    j = judge(dets([]), RecipeRules())
    assert j.verdict == "OK" and j.reasons == [] and j.counts == {}


def test_default_max_count_zero_makes_any_defect_ng() -> None:
    j = judge(dets([("scratch", 0.9, (0, 0, 10, 10))]), RecipeRules())
    assert j.verdict == "NG"
    assert j.reasons == ["scratch: 1 found, at most 0 allowed"]


def test_per_class_min_confidence_overrides_recipe_default() -> None:
    d = dets([("scratch", 0.5, (0, 0, 10, 10)), ("pit", 0.5, (20, 20, 30, 30))])
    rules = RecipeRules(min_confidence=0.3, classes={"scratch": ClassRule(min_confidence=0.6)})
    j = judge(d, rules)
    assert j.counted.tolist() == [False, True]
    assert j.reasons == ["pit: 1 found, at most 0 allowed"]


def test_max_count_per_class_tolerates_some_defects() -> None:
    d = dets(
        [("stain", 0.9, (0, 0, 5, 5)), ("stain", 0.9, (10, 10, 15, 15)), ("stain", 0.9, (20, 20, 25, 25))]
    )
    assert judge(d, RecipeRules(classes={"stain": ClassRule(max_count=3)})).verdict == "OK"
    j = judge(d, RecipeRules(classes={"stain": ClassRule(max_count=2)}))
    assert j.verdict == "NG" and j.reasons == ["stain: 3 found, at most 2 allowed"]


def test_size_limits_in_pixels_use_the_longest_side() -> None:
    d = dets(
        [("scratch", 0.9, (0, 0, 3, 20)), ("scratch", 0.9, (0, 0, 3, 3)), ("scratch", 0.9, (0, 0, 200, 2))]
    )
    rules = RecipeRules(classes={"scratch": ClassRule(min_size=5, max_size=100)})
    assert countable(d, rules).tolist() == [True, False, False]


def test_size_limits_in_mm_use_the_scale() -> None:
    d = dets([("pit", 0.9, (0, 0, 10, 10)), ("pit", 0.9, (0, 0, 30, 30))])  # 1 mm and 3 mm at 10 px/mm
    rules = RecipeRules(px_per_mm=10, classes={"pit": ClassRule(min_size=2, size_unit="mm")})
    assert countable(d, rules).tolist() == [False, True]


def test_mm_sizes_without_scale_are_rejected() -> None:
    with pytest.raises(ValidationError, match="px_per_mm"):
        RecipeRules(classes={"pit": ClassRule(min_size=2, size_unit="mm")})


def test_min_size_larger_than_max_size_is_rejected() -> None:
    with pytest.raises(ValidationError, match="larger than max_size"):
        ClassRule(min_size=10, max_size=5)


def test_roi_include_and_exclude_judge_box_centres() -> None:
    d = dets(
        [("crack", 0.9, (10, 10, 20, 20)), ("crack", 0.9, (60, 60, 70, 70)), ("crack", 0.9, (30, 30, 40, 40))]
    )
    roi = Roi(
        include=[[(0, 0), (50, 0), (50, 50), (0, 50)]],
        exclude=[[(30, 30), (45, 30), (45, 45), (30, 45)]],
    )
    # first: inside include; second: outside include; third: inside the exclude hole
    assert countable(d, RecipeRules(roi=roi)).tolist() == [True, False, False]


def test_camera_roi_replaces_the_default_roi() -> None:
    d = dets([("crack", 0.9, (60, 60, 70, 70))])
    rules = RecipeRules(
        roi=Roi(include=[[(0, 0), (50, 0), (50, 50)]]),
        camera_roi={"side": Roi(include=[[(50, 50), (100, 50), (100, 100), (50, 100)]])},
    )
    assert countable(d, rules, camera="top").tolist() == [False]
    assert countable(d, rules, camera="side").tolist() == [True]


def test_polygon_needs_three_points() -> None:
    with pytest.raises(ValidationError, match="at least 3"):
        Roi(include=[[(0, 0), (1, 1)]])


def test_ok_classes_never_count() -> None:
    j = judge(dets([("ok", 0.99, (0, 0, 64, 64))]), RecipeRules(ok_classes=["ok"]))
    assert j.verdict == "OK" and j.counted.tolist() == [False]


def test_counts_add_up_across_cameras() -> None:
    per_camera = {"top": dets([("stain", 0.9, (0, 0, 5, 5))]), "side": dets([("stain", 0.9, (0, 0, 5, 5))])}
    rules = RecipeRules(classes={"stain": ClassRule(max_count=1)})
    judgement, counted = judge_cameras(per_camera, rules)
    assert judgement.verdict == "NG" and judgement.counts == {"stain": 2}
    assert counted["top"].tolist() == [True] and counted["side"].tolist() == [True]


def test_unknown_classes_are_reported() -> None:
    rules = RecipeRules(classes={"scrath": ClassRule()}, ok_classes=["good"])
    assert rules.unknown_classes(NAMES.values()) == ["scrath", "good"]
