"""`Inspector`: a line's model plus its recipes' rules; turns one frame per camera into one result per part.

Loading is also the check used by hot reload: the model must load, warm up and run the reference image,
and every class named in the recipes must be a class of the model; otherwise `InspectorLoadError`.

Example:
    >>> inspector = Inspector.load(loaded_line.config, site="plant-1")          # doctest: +SKIP
    >>> outcome = inspector.inspect({"top": frame}, "default", part_id="P-1")     # doctest: +SKIP
    >>> outcome.result.verdict, outcome.result.reasons                            # doctest: +SKIP
    ('NG', ['scratch: 1 found, at most 0 allowed'])
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from edge_agent.config import LineConfig, LoadedLine
from edge_agent.inference_budget import InferenceBudget
from edge_agent.result import Defect, FrameInfo, InspectionResult, ModelInfo
from edge_agent.sources.base import Frame
from edge_agent.yamlconf import ConfigIssue, suggest
from vision.detections import Detections
from vision.rules import RecipeRules, judge_cameras

if TYPE_CHECKING:
    from vision.model import Model


class InspectorLoadError(Exception):
    """The model or the recipes cannot be used; the message says which file and why.

    `key` is the line file's key that is wrong (for `config check` to point at), e.g. `("model", "tile")`.
    """

    def __init__(self, message: str, key: tuple[str, ...] = ("model", "path")) -> None:
        super().__init__(message)
        self.key = key


def self_test_frame(imgsz: tuple[int, int], tile: tuple[int, int] | None) -> np.ndarray:
    """A deterministic textured frame, one model input per tile: what `Inspector.load` runs when the line
    names no reference image (texture, not a blank, so the decode and the rules see candidate boxes)."""
    rows, cols = tile or (1, 1)
    h, w = imgsz[0] * rows, imgsz[1] * cols
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@dataclass
class Outcome:
    """One inspected part: the result (not journaled yet) and what the archive needs to draw it."""

    result: InspectionResult
    frames: dict[str, Frame]
    detections: dict[str, Detections]
    counted: dict[str, np.ndarray]


def model_display_name(path: Path) -> str:
    """`models/demo/model.onnx` -> `demo`; `weights/pcb-v3.onnx` -> `pcb-v3`."""
    return path.parent.name if path.stem == "model" and path.parent.name else path.stem


def _classification_as_detection(
    probs: np.ndarray, shape: tuple[int, int], names: Mapping[int, str]
) -> Detections:
    """A classifier's top-1 class as one whole-image detection, so the same rules judge it."""
    top = int(np.argmax(probs))
    h, w = shape
    return Detections(
        xyxy=np.array([[0, 0, w, h]], dtype=np.float32),
        confidence=np.array([float(probs[top])], dtype=np.float32),
        class_id=np.array([top], dtype=np.int64),
        names=dict(names),
    )


class Inspector:
    """Immutable once loaded: hot reload builds a new one and swaps it in."""

    def __init__(self, config: LineConfig, site: str, model: Model) -> None:
        self.config = config
        self.site = site
        self.model = model
        self.model_info = ModelInfo(
            name=model_display_name(config.model.path), version=model.version, sha256=model.sha256
        )

    @classmethod
    def load(
        cls,
        config: LineConfig,
        site: str,
        budget: InferenceBudget | None = None,
        *,
        check_classes: bool = True,
    ) -> Inspector:
        """Load the model exactly as the line runs it (providers, imgsz, task, threads), warm it up, check
        the recipes' class names, then inspect the reference image (or a synthetic frame) once per camera
        through the same code as a real part: tiling, decode and every recipe's rules.

        With a `budget`, the model runs inside the agent's shared inference gate with its share of threads
        (a line's own `model.threads` still wins)."""
        from vision import Model, VisionError, read_image
        from vision.providers import resolve_providers

        mc = config.model
        shared = {} if budget is None else {"gate": budget.gate, "spinning": budget.spinning}
        threads = mc.threads or (budget.threads_per_model if budget is not None else None)
        try:
            resolve_providers(mc.providers)
        except VisionError as exc:
            raise InspectorLoadError(str(exc), ("model", "providers")) from exc
        try:
            model = Model(
                mc.path,
                providers=mc.providers,
                names=mc.names,
                imgsz=mc.imgsz,
                task=mc.task,
                threads=threads,
                conf=mc.conf,
                iou=mc.iou,
                **shared,
            )
            model.warmup(runs=1)  # one run initialises ORT's lazy parts; more only delays the first part
        except VisionError as exc:
            key = ("model", "task") if mc.task and "task" in str(exc) else ("model", "path")
            raise InspectorLoadError(str(exc), key) from exc
        except Exception as exc:  # a model that loads but fails to run is just as unusable
            raise InspectorLoadError(f"{mc.path}: the model fails to run: {exc}") from exc
        try:
            reference = read_image(mc.reference_image) if mc.reference_image else None
        except VisionError as exc:
            raise InspectorLoadError(str(exc), ("model", "reference_image")) from exc
        problems = []
        known = list(model.names.values())
        for recipe_name, rules in config.recipes.items():
            for cls_name in rules.unknown_classes(known) if check_classes else []:
                hint = suggest(cls_name, known)
                problems.append(
                    f"recipe {recipe_name!r}: class {cls_name!r} is not a class of {mc.path.name}"
                    + (f" (did you mean {hint!r}?)" if hint else f"; its classes: {', '.join(known)}")
                )
        if problems:
            raise InspectorLoadError("; ".join(problems), ("recipes",))
        inspector = cls(config, site, model)
        inspector._self_test(reference)
        return inspector

    def _self_test(self, reference: np.ndarray | None) -> None:
        """One part through predict and every recipe's rules; any failure is a load error (the line would
        otherwise start and fail on its first part)."""
        mc = self.config.model
        image = reference if reference is not None else self_test_frame(self.model.imgsz, mc.tile)
        frames = {
            cam.name: Frame(image=image, camera=cam.name, source_ref="self-test", index=0)
            for cam in self.config.cameras
        }
        what = "the reference image" if reference is not None else "a synthetic frame"
        settings = f"task {self.model.task}" + (f", tile {list(mc.tile)}" if mc.tile else "")
        try:
            detections, _ = self.predict(frames)
        except Exception as exc:
            key = ("model", "tile") if mc.tile else ("model",)
            raise InspectorLoadError(
                f"{mc.path}: the model fails on {what} as this line runs it ({settings}): {exc}", key
            ) from exc
        for recipe, rules in self.config.recipes.items():
            try:
                judge_cameras(detections, rules)
            except Exception as exc:
                raise InspectorLoadError(
                    f"recipe {recipe!r} fails on the model's output ({settings}): {exc}", ("recipes", recipe)
                ) from exc

    @property
    def decode_fit(self) -> tuple[int, int] | None:
        """The input size (h, w) that sources may decode frames down to (never below it), or None where
        the model must see the frame at full size: tiles cut the full frame, and segmentation masks and
        classification crops are not scaled back."""
        if self.config.model.tile is not None or self.model.task != "detect":
            return None
        return self.model.imgsz

    def rules(self, recipe: str) -> RecipeRules:
        try:
            return self.config.recipes[recipe]
        except KeyError:
            raise KeyError(f"unknown recipe {recipe!r}; recipes: {', '.join(self.config.recipes)}") from None

    def predict(self, frames: Mapping[str, Frame]) -> tuple[dict[str, Detections], dict[str, float]]:
        """Detections per camera and the stage timings (ms, summed over cameras)."""
        mc = self.config.model
        images = [f.image for f in frames.values()]
        if mc.tile is None and len(images) > 1 and self.model.dynamic_batch:
            predictions = self.model.predict_batch(images)
        else:
            predictions = [self.model.predict(im, tile=mc.tile) for im in images]
        timings: dict[str, float] = {}
        detections: dict[str, Detections] = {}
        for (cam, frame), pred in zip(frames.items(), predictions, strict=True):
            for stage, ms in pred.timing_ms.items():
                timings[stage] = timings.get(stage, 0.0) + ms
            if pred.probs is not None:
                detections[cam] = _classification_as_detection(pred.probs, frame.shape, self.model.names)
            elif (scale := frame.scale) is not None:  # decoded smaller than its file: boxes to its pixels
                detections[cam] = pred.detections.scaled(*scale)
            else:
                detections[cam] = pred.detections
        return detections, timings

    def inspect(
        self,
        frames: Mapping[str, Frame],
        recipe: str,
        *,
        part_id: str,
        trigger: Literal["free_run", "triggered"] = "free_run",
        extra: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """One part: model on every camera's frame, the recipe's rules, one verdict."""
        t_start = time.monotonic()
        rules = self.rules(recipe)
        detections, timings = self.predict(frames)
        t_rules = time.perf_counter()
        judgement, counted = judge_cameras(detections, rules)
        timings["rules"] = (time.perf_counter() - t_rules) * 1000
        timings["capture"] = max((f.capture_ms for f in frames.values()), default=0.0)
        timings["queue_wait"] = max((t_start - f.t_ready) * 1000 for f in frames.values()) if frames else 0.0
        timings["total"] = (
            max((time.monotonic() - f.t_ready) * 1000 for f in frames.values()) if frames else 0.0
        )
        defects = []
        for cam, det in detections.items():
            for i, rec in enumerate(det.to_records()):
                area = float(det.area[i])
                defects.append(
                    Defect(
                        camera=cam,
                        class_name=rec["class"],
                        class_id=rec["class_id"],
                        confidence=rec["confidence"],
                        xyxy=rec["xyxy"],
                        area_px=round(area, 2),
                        area_mm2=round(area / rules.px_per_mm**2, 4) if rules.px_per_mm else None,
                        counts_for_verdict=bool(counted[cam][i]),
                    )
                )
        result = InspectionResult(
            site=self.site,
            line=self.config.name,
            part_id=part_id,
            recipe=recipe,
            trigger=trigger,
            verdict=judgement.verdict,
            reasons=judgement.reasons,
            defects=defects,
            frames=[
                FrameInfo(camera=cam, width=f.shape[1], height=f.shape[0], source_ref=f.source_ref)
                for cam, f in frames.items()
            ],
            model=self.model_info,
            timings_ms={k: round(v, 3) for k, v in timings.items()},
            **{k: v for k, v in (extra or {}).items() if v is not None},
        )
        return Outcome(result=result, frames=dict(frames), detections=detections, counted=counted)

    def failure(
        self,
        reason: str,
        *,
        recipe: str,
        part_id: str,
        trigger: Literal["free_run", "triggered"],
        extra: Mapping[str, Any] | None = None,
    ) -> InspectionResult:
        """An NG result for a part that could not be inspected (no frame, inference error): fail safe."""
        return InspectionResult(
            site=self.site,
            line=self.config.name,
            part_id=part_id,
            recipe=recipe,
            trigger=trigger,
            verdict="NG",
            reasons=[reason],
            model=self.model_info,
            **{k: v for k, v in (extra or {}).items() if v is not None},
        )


def validate_line_model(loaded: LoadedLine) -> list[ConfigIssue]:
    """`config check`: load the line's model as the line will (`Inspector.load`: providers, imgsz, task,
    tiling, one inspected frame) and check every class its recipes name; issues with lines."""
    mc = loaded.config.model
    doc = loaded.doc
    try:
        model = Inspector.load(loaded.config, site="config-check", check_classes=False).model
    except InspectorLoadError as exc:
        return [doc.issue(exc.key, str(exc))]
    known = list(model.names.values())
    issues = []
    for recipe, rules in loaded.config.recipes.items():
        for cls_name in rules.classes:
            if cls_name not in known:
                hint = suggest(cls_name, known)
                msg = f"{cls_name!r} is not a class of {mc.path.name}" + (
                    f" (did you mean {hint!r}?)" if hint else f"; its classes: {', '.join(known)}"
                )
                issues.append(doc.issue(("recipes", recipe, "classes", cls_name), msg))
        for i, cls_name in enumerate(rules.ok_classes):
            if cls_name not in known:
                hint = suggest(cls_name, known)
                msg = f"{cls_name!r} is not a class of {mc.path.name}" + (
                    f" (did you mean {hint!r}?)" if hint else ""
                )
                issues.append(doc.issue(("recipes", recipe, "ok_classes", i), msg))
    return issues
