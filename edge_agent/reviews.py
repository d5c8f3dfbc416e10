"""Reviews: a person's judgement of a journaled result, the start of the data loop back to training.

A quality engineer marks a result *confirmed NG*, *false reject* (judged NG, the part was good), *escape*
(judged OK, the part was bad, found later) or *confirmed OK*, and corrects its boxes (deletes a wrong
one, draws a missing one). Reviews are stored append-only next to the result in the journal
(`ResultJournal.add_review`): the newest review of a result is its current truth; the older ones are the
audit trail (who, when, what changed). `edge-inspect dataset from-reviews` turns them into training data.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Decision = Literal["confirmed_ng", "false_reject", "escape", "confirmed_ok"]

DECISIONS: dict[str, str] = {
    "confirmed_ng": "confirmed NG",
    "false_reject": "false reject (part was good)",
    "escape": "escape (NG part judged OK)",
    "confirmed_ok": "confirmed OK",
}

#: which machine verdict each decision is about
VERDICT_OF_DECISION: dict[str, str] = {
    "confirmed_ng": "NG",
    "false_reject": "NG",
    "escape": "OK",
    "confirmed_ok": "OK",
}


class ReviewBox(BaseModel):
    """One defect as the reviewer says it is: camera, class and box in image pixels."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    camera: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    class_name: str = Field(alias="class", min_length=1, max_length=64)
    class_id: int = Field(ge=0)
    xyxy: list[float] = Field(min_length=4, max_length=4)

    @field_validator("xyxy")
    @classmethod
    def _ordered(cls, xyxy: list[float]) -> list[float]:
        x1, y1, x2, y2 = xyxy
        if min(xyxy) < 0 or x2 <= x1 or y2 <= y1:
            raise ValueError(f"box {xyxy} must be x1 < x2, y1 < y2, all >= 0 (pixels)")
        return [round(float(v), 1) for v in xyxy]


class ReviewInput(BaseModel):
    """What a reviewer submits for one result."""

    model_config = ConfigDict(extra="forbid")

    decision: Decision
    boxes: list[ReviewBox] = Field(default_factory=list, max_length=500)
    comment: str = Field("", max_length=2000)
    not_localised: bool = Field(
        False, description="an NG part whose defect cannot be boxed: kept, but out of detection training data"
    )


def decision_error(decision: str, verdict: str) -> str | None:
    """Why `decision` does not fit a result judged `verdict`, or None when it does."""
    wanted = VERDICT_OF_DECISION.get(decision)
    if wanted is None:
        return f"unknown decision {decision!r}; one of: {', '.join(DECISIONS)}"
    if wanted != verdict:
        fitting = [d for d, v in VERDICT_OF_DECISION.items() if v == verdict]
        return (
            f"{DECISIONS[decision]!r} is about a part judged {wanted}; this one was judged {verdict} "
            f"(choose {' or '.join(fitting)})"
        )
    return None


#: decisions that say the part is good (its label must have no defect) and that it is bad (one box at least)
GOOD_PART = ("false_reject", "confirmed_ok")
BAD_PART = ("confirmed_ng", "escape")


def boxes_error(decision: str, boxes: list, not_localised: bool = False) -> str | None:
    """Why `boxes` contradict `decision`, or None when they fit: a part judged good has no defect box;
    a bad part has at least one, unless the reviewer says it cannot be localised (then it has none and
    stays out of detection training data: a bad part with an empty label would teach "good").

        >>> boxes_error("false_reject", [{"class": "pit"}])[:48]
        'a false reject (part was good) cannot keep 1 defe'
        >>> boxes_error("escape", []) is not None, boxes_error("escape", [], not_localised=True)
        (True, None)
    """
    if decision in GOOD_PART:
        if boxes:
            return (
                f"a {DECISIONS[decision]} cannot keep {len(boxes)} defect box(es): delete them "
                "(the label would be a good part with defects)"
            )
        if not_localised:
            return f"'not localised' is for NG parts, not a {DECISIONS[decision]}"
    elif decision in BAD_PART:
        if not boxes and not not_localised:
            return (
                f"{DECISIONS[decision]}: draw a box around the defect, or mark it 'not localised' "
                "(an NG part with no box would be labelled as a good part)"
            )
        if boxes and not_localised:
            return "'not localised' with boxes drawn: keep the boxes or the mark, not both"
    return None


def export_problem(review: dict) -> tuple[str, str] | None:
    """Why a stored review cannot become detection training data: ("refused", reason) for one whose
    boxes contradict its decision (stored before the console refused them), ("left out", reason) for
    an NG part marked not localised; None when it can."""
    problem = boxes_error(review["decision"], review.get("boxes") or [], review.get("not_localised", False))
    if problem:
        return "refused", f"{problem}; review it again on the console"
    if review.get("not_localised"):
        return "left out", f"{DECISIONS[review['decision']]}, not localised: no box to learn from"
    return None


def box_key(box: dict) -> tuple:
    return (box["camera"], box["class"], tuple(round(float(v), 1) for v in box["xyxy"]))


def box_changes(before: list[dict], after: list[dict]) -> dict[str, list[dict]]:
    """Boxes removed from and added to `before` to make `after` (the audit's "what changed")."""
    before_keys = {box_key(b) for b in before}
    after_keys = {box_key(b) for b in after}
    return {
        "removed": [b for b in before if box_key(b) not in after_keys],
        "added": [b for b in after if box_key(b) not in before_keys],
    }
