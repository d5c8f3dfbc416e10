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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from contract.result import AnomalyScore, Defect, FrameInfo, InspectionResult, ModelInfo
from contract.yamlconf import ConfigIssue, suggest
from edge_agent.config import AnomalySettings, LineConfig, LoadedLine, RuntimeSettings
from edge_agent.inference_budget import InferenceBudget
from edge_agent.outcome import Outcome
from edge_agent.sources.base import Frame
from vision.detections import Detections
from vision.rules import ClassRule, RecipeRules, judge_cameras

if TYPE_CHECKING:
    from vision.anomaly import Anomaly, AnomalyModel
    from vision.model import Model

ANOMALY_CLASS = "anomaly"  # vision.anomaly.ANOMALY_CLASS (not imported: it would load onnxruntime)


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


def _load(
    key: tuple[str, ...],
    path: Path,
    budget: InferenceBudget | None,
    providers: str | list[str],
    threads: int | None,
    runtime: RuntimeSettings | None = None,
    **options: Any,
) -> Model | AnomalyModel:
    """`vision.load_model` as a line runs it (shared gate, threads, the runtime the accuracy gate allows),
    warmed up; `InspectorLoadError` naming the line file's key."""
    from edge_agent.runtime_choice import RuntimeRefused, choose_runtime
    from vision import VisionError, load_model
    from vision.providers import resolve_providers

    shared = {} if budget is None else {"gate": budget.gate, "spinning": budget.spinning}
    threads = threads or (budget.threads_per_model if budget is not None else None)
    try:
        resolve_providers(providers)
    except VisionError as exc:
        raise InspectorLoadError(str(exc), (*key, "providers")) from exc
    choice = None
    if runtime is not None:
        try:
            choice = choose_runtime(
                path, backend=runtime.backend, device=runtime.device, precision=runtime.precision,
                force=runtime.force, threads=threads, cache_dir=runtime.cache_dir,
            )
        except (RuntimeRefused, VisionError, RuntimeError, ValueError) as exc:  # refused, or no candidate ran
            raise InspectorLoadError(f"{path}: {exc}", (*key, "backend")) from exc
        r = choice.runtime
        options.update(backend=r.backend, device=r.device, precision=r.precision, cache_dir=runtime.cache_dir)
    try:
        model = load_model(path, providers=providers, threads=threads, **options, **shared)
        model.runtime_choice = choice.to_dict() if choice else None  # type: ignore[union-attr]
        model.warmup(runs=1)  # one run initialises ORT's lazy parts; more only delays the first part
    except VisionError as exc:
        text = str(exc)  # point `config check` at the option the message is about, if the line gave it
        keys = ("task", "image_threshold", "pixel_threshold", "names")
        field = next((k for k in keys if options.get(k) is not None and k in text), "path")
        raise InspectorLoadError(text, (*key, field)) from exc
    except Exception as exc:  # a model that loads but fails to run is just as unusable
        raise InspectorLoadError(f"{path}: the model fails to run: {exc}", (*key, "path")) from exc
    if key == ("anomaly",) and model.task != "anomaly":
        raise InspectorLoadError(f"{path}: not an anomaly model (a {model.task} model)", (*key, "path"))
    return model


def _anomaly_options(settings: AnomalySettings) -> dict[str, Any]:
    """The `load_model` options of a config's anomaly settings that differ from the model's own."""
    options: dict[str, Any] = {}
    if settings.image_threshold is not None:
        options["image_threshold"] = settings.image_threshold
    if settings.pixel_threshold is not None:
        options["pixel_threshold"] = settings.pixel_threshold
    if settings.min_region_area != 1:
        options["min_region_area"] = settings.min_region_area
    return options


def with_anomaly_rule(rules: RecipeRules) -> RecipeRules:
    """`rules` where anomaly regions are not filtered by the recipe's default `min_confidence`: their
    confidence is a peak score in the model's units, and the pixel threshold has already chosen them. A
    recipe that gives `classes.anomaly.min_confidence` keeps it."""
    rule = rules.classes.get(ANOMALY_CLASS, ClassRule())
    if rule.min_confidence is not None:
        return rules
    classes = {**rules.classes, ANOMALY_CLASS: rule.model_copy(update={"min_confidence": 0.0})}
    return rules.model_copy(update={"classes": classes})


def _with_area(det: Detections) -> Detections:
    """Detections with `data["area_px"]` (box areas where the model gives none), to merge with regions."""
    if "area_px" in det.data:
        return det
    data = {**det.data, "area_px": det.area}
    return Detections(det.xyxy, det.confidence, det.class_id, det.names, det.mask, data)


class Inspector:
    """Immutable once loaded: hot reload builds a new one and swaps it in.

    `model` is the line's `model:` (any kind); `anomaly_model` the anomaly model, whether it is `model`
    itself or the `anomaly:` model beside it. Anomaly regions join the detections of their camera as class
    "anomaly" (`names` has every class of the line), so the recipes judge them as detections; an image
    score at or above its threshold makes the part NG by itself (unless `judge_image_score: false`).
    """

    def __init__(
        self,
        config: LineConfig,
        site: str,
        model: Model | AnomalyModel,
        anomaly_model: AnomalyModel | None = None,
    ) -> None:
        self.config = config
        self.site = site
        self.model = model
        self.model_info = ModelInfo(
            name=model_display_name(config.model.path), version=model.version, sha256=model.sha256
        )
        self.names: dict[int, str] = dict(model.names)
        self.anomaly_model: AnomalyModel | None = None
        self.anomaly_info: ModelInfo | None = None
        self.anomaly_settings: AnomalySettings | None = None
        self._anomaly_id = 0
        if anomaly_model is not None and config.anomaly is not None:
            self.anomaly_model, self.anomaly_settings = anomaly_model, config.anomaly
            self.anomaly_info = ModelInfo(
                name=model_display_name(config.anomaly.path),
                version=anomaly_model.version,
                sha256=anomaly_model.sha256,
            )
            same = [k for k, v in self.names.items() if v == ANOMALY_CLASS]
            self._anomaly_id = same[0] if same else max(self.names, default=-1) + 1
            self.names[self._anomaly_id] = ANOMALY_CLASS
        elif model.task == "anomaly":
            self.anomaly_model, self.anomaly_settings = model, config.model  # type: ignore[assignment]
            self.anomaly_info = self.model_info
        self._recipes = (
            {name: with_anomaly_rule(r) for name, r in config.recipes.items()}
            if self.anomaly_model is not None
            else dict(config.recipes)
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
        """Load the model(s) exactly as the line runs them (providers, imgsz, task, threads), warm them up,
        check the recipes' class names, then inspect the reference image (or a synthetic frame) once per
        camera through the same code as a real part: tiling, decode and every recipe's rules.

        With a `budget`, the models run inside the agent's shared inference gate with its share of threads
        (a line's own `threads` still wins)."""
        from vision import VisionError, read_image

        mc = config.model
        model = _load(
            ("model",),
            mc.path,
            budget,
            mc.providers,
            mc.threads,
            mc,
            names=mc.names,
            imgsz=mc.imgsz,
            task=mc.task,
            conf=mc.conf,
            iou=mc.iou,
            **_anomaly_options(mc),
        )
        anomaly_model = None
        if config.anomaly is not None:
            ac = config.anomaly
            if model.task == "anomaly":
                message = f"{mc.path} is an anomaly model already; `anomaly:` is for one beside a detector"
                raise InspectorLoadError(message, ("anomaly",))
            options = _anomaly_options(ac)
            anomaly_model = _load(
                ("anomaly",), ac.path, budget, ac.providers, ac.threads, ac, task="anomaly", **options
            )
        if model.task == "anomaly" and mc.tile is not None:
            message = f"{mc.path}: an anomaly model sees the whole image; it cannot be tiled"
            raise InspectorLoadError(message, ("model", "tile"))
        try:
            reference = read_image(mc.reference_image) if mc.reference_image else None
        except VisionError as exc:
            raise InspectorLoadError(str(exc), ("model", "reference_image")) from exc
        inspector = cls(config, site, model, anomaly_model)  # type: ignore[arg-type]
        problems = []
        known = list(inspector.names.values())
        for recipe_name, rules in config.recipes.items():
            for cls_name in rules.unknown_classes(known) if check_classes else []:
                hint = suggest(cls_name, known)
                problems.append(
                    f"recipe {recipe_name!r}: class {cls_name!r} is not a class of {mc.path.name}"
                    + (f" (did you mean {hint!r}?)" if hint else f"; its classes: {', '.join(known)}")
                )
        if problems:
            raise InspectorLoadError("; ".join(problems), ("recipes",))
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
            detections, _, _ = self.predict(frames)
        except Exception as exc:
            key = ("model", "tile") if mc.tile else ("model",)
            raise InspectorLoadError(
                f"{mc.path}: the model fails on {what} as this line runs it ({settings}): {exc}", key
            ) from exc
        for recipe, rules in self._recipes.items():
            try:
                judge_cameras(detections, rules)
            except Exception as exc:
                raise InspectorLoadError(
                    f"recipe {recipe!r} fails on the model's output ({settings}): {exc}", ("recipes", recipe)
                ) from exc

    @property
    def decode_fit(self) -> tuple[int, int] | None:
        """The input size (h, w) that sources may decode frames down to (never below it), or None where
        the model must see the frame at full size: tiles cut the full frame, segmentation masks and
        classification crops are not scaled back, and anomaly maps are kept at the image's size."""
        if self.anomaly_model is not None:
            return None
        if self.config.model.tile is not None or self.model.task != "detect":
            return None
        return self.model.imgsz

    def rules(self, recipe: str) -> RecipeRules:
        try:
            return self._recipes[recipe]
        except KeyError:
            raise KeyError(f"unknown recipe {recipe!r}; recipes: {', '.join(self.config.recipes)}") from None

    def predict(
        self, frames: Mapping[str, Frame]
    ) -> tuple[dict[str, Detections], dict[str, float], dict[str, Anomaly]]:
        """Detections per camera (anomaly regions included), the stage timings (ms, summed over cameras)
        and the anomaly output per camera (empty without an anomaly model)."""
        mc = self.config.model
        images = [f.image for f in frames.values()]
        if mc.tile is None and len(images) > 1 and self.model.dynamic_batch:
            predictions = self.model.predict_batch(images)
        else:
            predictions = [self.model.predict(im, tile=mc.tile) for im in images]
        timings: dict[str, float] = {}
        detections: dict[str, Detections] = {}
        anomalies: dict[str, Anomaly] = {}
        for (cam, frame), pred in zip(frames.items(), predictions, strict=True):
            for stage, ms in pred.timing_ms.items():
                timings[stage] = timings.get(stage, 0.0) + ms
            if pred.anomaly is not None:
                anomalies[cam] = pred.anomaly
            if pred.probs is not None:
                detections[cam] = _classification_as_detection(pred.probs, frame.shape, self.model.names)
            elif (scale := frame.scale) is not None:  # decoded smaller than its file: boxes to its pixels
                detections[cam] = pred.detections.scaled(*scale)
            else:
                detections[cam] = pred.detections
        beside = self.anomaly_model if self.anomaly_model is not self.model else None
        if beside is not None:
            t0 = time.perf_counter()
            side = beside.predict_batch(images) if len(images) > 1 and beside.dynamic_batch else [
                beside.predict(im) for im in images
            ]
            for cam, pred in zip(frames, side, strict=True):
                assert pred.anomaly is not None
                anomalies[cam] = pred.anomaly
                regions = pred.detections
                regions = Detections(
                    regions.xyxy,
                    regions.confidence,
                    np.full(len(regions), self._anomaly_id, np.int64),
                    self.names,
                    data=regions.data,
                )
                own = _with_area(detections[cam])
                detections[cam] = Detections.merge(
                    [Detections(own.xyxy, own.confidence, own.class_id, self.names, data=own.data), regions]
                )
            timings["anomaly"] = (time.perf_counter() - t0) * 1000
        return detections, timings, anomalies

    def _anomaly_scores(self, anomalies: Mapping[str, Anomaly]) -> tuple[list[AnomalyScore], list[str]]:
        """The result's anomaly entries and the reasons the image scores give (none when not judged)."""
        if self.anomaly_info is None or self.anomaly_settings is None:
            return [], []
        scores, reasons = [], []
        several = len(anomalies) > 1
        for cam, a in anomalies.items():
            scores.append(
                AnomalyScore(
                    camera=cam,
                    score=round(float(a.score), 6),
                    image_threshold=float(a.image_threshold),
                    pixel_threshold=float(a.pixel_threshold),
                    anomalous=a.anomalous,
                    model=self.anomaly_info,
                )
            )
            if a.anomalous and self.anomaly_settings.judge_image_score:
                reasons.append(f"{cam}: {a.reason()}" if several else a.reason())
        return scores, reasons

    def inspect(
        self,
        frames: Mapping[str, Frame],
        recipe: str,
        *,
        part_id: str,
        trigger: Literal["free_run", "triggered"] = "free_run",
        extra: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """One part: model(s) on every camera's frame, the recipe's rules, one verdict."""
        t_start = time.monotonic()
        rules = self.rules(recipe)
        detections, timings, anomalies = self.predict(frames)
        t_rules = time.perf_counter()
        judgement, counted = judge_cameras(detections, rules)
        anomaly_scores, anomaly_reasons = self._anomaly_scores(anomalies)
        timings["rules"] = (time.perf_counter() - t_rules) * 1000
        timings["capture"] = max((f.capture_ms for f in frames.values()), default=0.0)
        timings["queue_wait"] = max((t_start - f.t_ready) * 1000 for f in frames.values()) if frames else 0.0
        timings["total"] = (
            max((time.monotonic() - f.t_ready) * 1000 for f in frames.values()) if frames else 0.0
        )
        defects = []
        for cam, det in detections.items():
            areas = det.data.get("area_px", det.area)
            for i, rec in enumerate(det.to_records()):
                area = float(areas[i])
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
        reasons = anomaly_reasons + judgement.reasons
        result = InspectionResult(
            site=self.site,
            line=self.config.name,
            part_id=part_id,
            recipe=recipe,
            trigger=trigger,
            verdict="NG" if reasons else "OK",
            reasons=reasons,
            defects=defects,
            anomaly=anomaly_scores,
            frames=[
                FrameInfo(camera=cam, width=f.shape[1], height=f.shape[0], source_ref=f.source_ref)
                for cam, f in frames.items()
            ],
            model=self.model_info,
            timings_ms={k: round(v, 3) for k, v in timings.items()},
            **{k: v for k, v in (extra or {}).items() if v is not None},
        )
        return Outcome(
            result=result, frames=dict(frames), detections=detections, counted=counted, anomaly=anomalies
        )

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
        inspector = Inspector.load(loaded.config, site="config-check", check_classes=False)
    except InspectorLoadError as exc:
        return [doc.issue(exc.key, str(exc))]
    known = list(inspector.names.values())
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
