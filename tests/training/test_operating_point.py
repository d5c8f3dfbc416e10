"""Operating points on small constructed sets whose answer is known (checked by brute force too)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from training.operating_point import (
    choose_operating_point,
    plot_tradeoff,
    rates,
    tradeoff_curve,
    uniform_threshold_for_target,
)

NAMES = {0: "scratch", 1: "pit"}


def _constructed() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """10 NG parts (5 scratch, 5 pit) and 10 OK parts.

    The scratch detector is sure (0.7-0.9 on scratches) but also fires at 0.5-0.6 on OK parts; the pit
    detector is weak on pits (0.2-0.4) and clean on OK parts (<= 0.1). One threshold for both classes must
    go down to 0.2 for the pits and then rejects every OK part the scratch detector fires on; per class,
    scratch 0.7 / pit 0.2 catches every NG part and rejects none.
    """
    scores = np.zeros((20, 2))
    present = np.zeros((20, 2), dtype=bool)
    scores[0:5, 0] = [0.9, 0.85, 0.8, 0.75, 0.7]
    present[0:5, 0] = True
    scores[5:10, 1] = [0.4, 0.35, 0.3, 0.25, 0.2]
    present[5:10, 1] = True
    scores[10:16, 0] = [0.6, 0.55, 0.5, 0.6, 0.52, 0.58]  # scratch false alarms on OK parts
    scores[10:20, 1] = 0.1
    is_ng = present.any(axis=1)
    return scores, is_ng, present


def test_per_class_thresholds_beat_one_threshold_on_a_known_set() -> None:
    scores, is_ng, present = _constructed()
    assert uniform_threshold_for_target(scores, is_ng, 0.0) == pytest.approx(0.2)
    point = choose_operating_point(scores, is_ng, NAMES, target=0.0, class_present=present)
    # scratch centred between its strongest OK-part score (0.6) and its weakest NG part (0.7); pit, weak
    # everywhere, stays at its weakest pit: nothing is centred below CENTRE_FLOOR (0.25)
    assert point.thresholds == {"scratch": 0.65, "pit": 0.2}
    assert point.escape_rate == 0.0 and point.false_reject_rate == 0.0 and point.reached
    assert (point.ng_parts, point.ok_parts) == (10, 10)
    # one threshold for both: the same escape rate costs 6 false rejects of 10
    assert rates(scores, is_ng, np.array([0.2, 0.2])) == (0, 6)


def test_escape_budget_is_spent_on_false_rejects() -> None:
    """Target 10 % of 10 NG parts = 1 escape allowed: letting the weakest pit (0.2) go lets the pit
    threshold rise above three OK parts that look like weak pits (0.22)."""
    scores, is_ng, present = _constructed()
    scores[10:13, 1] = 0.22
    strict = choose_operating_point(scores, is_ng, NAMES, target=0.0, class_present=present)
    assert strict.thresholds["pit"] == 0.2 and strict.false_rejects == 3
    relaxed = choose_operating_point(scores, is_ng, NAMES, target=0.1, class_present=present)
    assert relaxed.escapes == 1 and relaxed.false_rejects == 0
    assert relaxed.thresholds == {"scratch": 0.65, "pit": 0.235}  # between 0.22 look-alikes and 0.25 pit
    # brute force over every pair of candidate thresholds: nothing does better at <= 1 escape
    grid = sorted({round(float(s), 3) for s in scores.ravel()} | {0.001, 1.0})
    best = min(
        rates(scores, is_ng, np.array(pair))[1]
        for pair in itertools.product(grid, grid)
        if rates(scores, is_ng, np.array(pair))[0] <= 1
    )
    assert relaxed.false_rejects == best


def test_a_split_without_ok_parts_says_so() -> None:
    scores, is_ng, present = _constructed()
    point = choose_operating_point(scores[:10], is_ng[:10], NAMES, target=0.0, class_present=present[:10])
    assert point.false_reject_rate is None and point.ok_parts == 0
    assert any("no defect-free (OK) parts" in n for n in point.notes)
    assert point.thresholds == {"scratch": 0.7, "pit": 0.2}  # the highest that still catch every part


def test_unreachable_target_is_reported() -> None:
    scores, is_ng, present = _constructed()
    scores[9, 1] = 0.0  # a pit the model never sees
    point = choose_operating_point(scores, is_ng, NAMES, target=0.0, class_present=present)
    assert not point.reached and point.escapes == 1
    assert any("'pit'" in n and "cannot be reached" in n for n in point.notes)


def test_thresholds_are_floored_and_keep_the_parts_they_catch() -> None:
    scores = np.array([[0.6000000238418579], [0.31234], [0.1]])
    is_ng = np.array([True, True, False])
    point = choose_operating_point(scores, is_ng, {0: "scratch"}, target=0.0, class_present=is_ng[:, None])
    assert point.thresholds == {"scratch": 0.281}  # centred in [0.25, 0.312]: floored, so <= 0.31234
    assert point.escapes == 0


def test_tradeoff_curve_and_plot(tmp_path: Path) -> None:
    scores, is_ng, present = _constructed()
    curve = tradeoff_curve(scores, is_ng)
    assert curve[0]["threshold"] == 1.0 and curve[0]["escape_rate"] == 1.0
    assert curve[-1]["escape_rate"] == 0.0
    frr = [p["false_reject_rate"] for p in curve]
    assert frr == sorted(frr)  # lower thresholds never reject fewer OK parts
    points = [choose_operating_point(scores, is_ng, NAMES, t, present) for t in (0.0, 0.1, 0.3)]
    path = plot_tradeoff(tmp_path / "tradeoff.png", curve, points, points[0], "test")
    assert path.stat().st_size > 5000
    json.dumps(points[0].to_dict())  # goes into the card as plain JSON


def test_no_class_leans_on_another_class_firing_on_its_parts() -> None:
    """Every pit part also gets a (false) scratch detection at 0.9: at the part level raising the pit
    threshold to 1 costs nothing, but the pits would then be caught by luck only. The pit threshold must
    stay where the pits themselves are caught."""
    scores, is_ng, present = _constructed()
    scores[5:10, 0] = 0.9
    scores[10:13, 1] = 0.22  # and some OK parts that look like weak pits: a reason to raise it
    point = choose_operating_point(scores, is_ng, NAMES, target=0.0, class_present=present)
    assert point.thresholds["pit"] == 0.2 and point.escapes == 0
