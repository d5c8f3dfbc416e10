"""Configuration of the agent: a site file (`configs/agent.yaml`) and one YAML file per line.

One pydantic model per section; plug-ins (sources, triggers, publishers) are chosen by `type:`.
Relative paths are relative to the file that contains them. `load_agent_config()` reports every error
with file, line and key path, and suggests the nearest valid key for a typo.

Example:
    >>> cfg = load_agent_config("configs/agent.yaml")                       # doctest: +SKIP
    >>> [line.name for line in cfg.lines], cfg.site.metrics.port             # doctest: +SKIP
    (['demo'], 9108)
"""

from __future__ import annotations

import glob as globlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from contract.yamlconf import (
    ConfigError,
    ConfigIssue,
    YamlDocument,
    load_yaml,
    resolve_model_paths,
    suggest,
    validate,
)
from edge_agent.console.settings import ConsoleConfig
from edge_agent.sources import SourceConfig
from vision.rules import RecipeRules

# -- line file -------------------------------------------------------------------------------------


class CameraConfig(BaseModel):
    """One camera of a line. Several cameras = several views of the same part, one verdict."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    source: SourceConfig
    reconnect_initial_s: float = Field(0.5, gt=0, description="first retry delay after the camera is lost")
    reconnect_max_s: float = Field(10.0, gt=0, description="retry delay cap (doubles each failure)")


class FreeRunTrigger(BaseModel):
    """Inspect continuously, up to `max_fps`; the newest frame wins, skipped frames are counted."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["free_run"] = "free_run"
    max_fps: float | None = Field(None, gt=0, description="inspections per second at most (none: no cap)")


class TriggeredTrigger(BaseModel):
    """One inspection per trigger (OPC UA method, PLC handshake, ZeroMQ request or CLI); never dropped."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["triggered"] = "triggered"
    frame_timeout_s: float = Field(
        5.0, gt=0, description="no frame in this time: the part is answered NG, with the reason"
    )
    fresh_frame: bool = Field(True, description="live cameras: use a frame captured after the trigger")


TriggerConfig = Annotated[FreeRunTrigger | TriggeredTrigger, Field(discriminator="type")]


class AnomalySettings(BaseModel):
    """How an anomaly model's output is judged (docs/anomaly.md); unset thresholds come from its card."""

    model_config = ConfigDict(extra="forbid")

    image_threshold: float | None = Field(
        None, description="anomaly models: image score at or above which the part is NG (default: card)"
    )
    pixel_threshold: float | None = Field(
        None, description="anomaly models: map value from which pixels form regions (default: card)"
    )
    min_region_area: PositiveInt = Field(1, description="anomaly models: smaller regions (px) are dropped")
    judge_image_score: bool = Field(
        True,
        description="anomaly models: the image score makes a part NG by itself; false: only the regions "
        "do, through the recipe's rules (ROI, size, count)",
    )


class RuntimeSettings(BaseModel):
    """Which runtime runs the model (docs/openvino.md). Anything but ONNX Runtime FP32 must have passed the
    accuracy gate on this CPU type (its model card says so) unless `force: true`."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["onnxruntime", "openvino", "auto"] = Field(
        "onnxruntime",
        description="onnxruntime (default), openvino (the [openvino] extra), or auto: the fastest runtime "
        "that passed the gate, timed on this machine at first start (cached)",
    )
    device: str = Field("CPU", description="openvino: CPU, GPU, NPU or AUTO (auto: the devices to try)")
    precision: Literal["f32", "bf16", "int8"] = Field(
        "f32", description="f32; bf16 (openvino); int8 (onnxruntime: <stem>.int8.onnx; openvino: its IR)"
    )
    force: bool = Field(False, description="run a runtime the accuracy gate has not passed (logged)")
    cache_dir: Path | None = Field(
        None, description="compiled models and tuning results (default: ~/.cache/edge-inspect)"
    )

    @model_validator(mode="after")
    def _known_runtime(self) -> RuntimeSettings:
        if self.backend != "auto":
            from vision.runtime import Runtime

            Runtime(self.backend, self.device, self.precision)  # ValueError says what does not fit
        return self


class AnomalyModelConfig(AnomalySettings, RuntimeSettings):
    """An anomaly model run beside the line's `model:` on every camera: NG if either says so."""

    path: Path = Field(description="the anomaly .onnx file (relative to the line file)")
    providers: str | list[str] = Field("auto", description='"auto", "cpu", "cuda" or a list of ORT providers')
    threads: int | None = Field(None, gt=0, description="ONNX Runtime intra-op threads (default: cores)")


class ModelConfig(AnomalySettings, RuntimeSettings):
    """The ONNX model of a line (`vision.load_model` options) and its thresholds. Any model kind: a
    detector, segmenter, classifier or anomaly model (the anomaly settings apply only to the last)."""

    path: Path = Field(description="the .onnx file (relative to the line file)")
    providers: str | list[str] = Field("auto", description='"auto", "cpu", "cuda" or a list of ORT providers')
    threads: int | None = Field(None, gt=0, description="ONNX Runtime intra-op threads (default: cores)")
    conf: float = Field(0.25, ge=0, le=1, description="model confidence threshold (rules may raise it)")
    iou: float = Field(0.7, ge=0, le=1)
    tile: tuple[PositiveInt, PositiveInt] | None = Field(
        None, description="[rows, cols] tiling for small defects (each at least 1)"
    )
    names: dict[int, str] | None = Field(None, description="class names, only if the ONNX file lacks them")
    imgsz: PositiveInt | tuple[PositiveInt, PositiveInt] | None = Field(
        None, description="input size, only if the file lacks it"
    )
    task: Literal["detect", "segment", "classify", "anomaly"] | None = None
    reference_image: Path | None = Field(
        None, description="image run once at (re)load to check the model works (default: a blank frame)"
    )


class LineConfig(BaseModel):
    """One inspection line: its cameras, trigger, model and recipes."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="line id (topics, metrics)")
    description: str = ""
    enabled: bool = True
    cameras: list[CameraConfig] = Field(min_length=1)
    trigger: TriggerConfig = Field(default_factory=FreeRunTrigger)
    model: ModelConfig
    anomaly: AnomalyModelConfig | None = Field(
        None, description="an anomaly model beside `model:` on the same cameras (NG if either says so)"
    )
    recipes: dict[str, RecipeRules] = Field(
        default_factory=lambda: {"default": RecipeRules()}, description="recipe name -> rules"
    )
    active_recipe: str | None = Field(None, description="recipe at start (default: the first)")
    result_queue: int = Field(8, ge=1, description="results waiting for the journal before inference waits")

    @field_validator("cameras")
    @classmethod
    def _unique_cameras(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        names = [c.name for c in cameras]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"camera names must be unique; repeated: {', '.join(dupes)}")
        return cameras

    @field_validator("recipes")
    @classmethod
    def _some_recipe(cls, recipes: dict[str, RecipeRules]) -> dict[str, RecipeRules]:
        if not recipes:
            raise ValueError("at least one recipe is needed")
        return recipes

    @field_validator("active_recipe")
    @classmethod
    def _known_recipe(cls, active: str | None, info: ValidationInfo) -> str | None:
        recipes = info.data.get("recipes")
        if active is not None and recipes and active not in recipes:
            hint = suggest(active, recipes)
            raise ValueError(
                f"{active!r} is not one of the recipes ({', '.join(recipes)})"
                + (f"; did you mean {hint!r}?" if hint else "")
            )
        return active

    @model_validator(mode="after")
    def _default_recipe(self) -> LineConfig:
        if self.active_recipe is None and self.recipes:
            self.active_recipe = next(iter(self.recipes))
        return self


# -- site file -------------------------------------------------------------------------------------


class HubLinkConfig(BaseModel):
    """`hub:` in the site file: where the programme hub is and how this agent proves who it is."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="the hub's HTTP address, e.g. https://hub.example.org:8090")
    agent_id: str | None = Field(None, description="this agent's id on the hub (default: the site id)")
    token_file: Path = Field(description="file holding this agent's token (edge-inspect hub agent add)")
    heartbeat_s: float = Field(10.0, gt=0, description="seconds between heartbeats")
    timeout_s: float = Field(15.0, gt=0, description="HTTP timeout of one call")
    trusted_keys: list[Path] = Field(
        default_factory=list, description="public ed25519 keys (.pub) whose signed models this agent runs"
    )
    models_dir: Path = Field(Path("data/hub-models"), description="models pulled from the hub")
    command_poll_s: float = Field(20.0, gt=0, le=60, description="long-poll wait for the hub's commands")


class RetentionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_age_days: float | None = Field(90, gt=0, description="delete results older than this")
    max_rows: int | None = Field(5_000_000, gt=0, description="keep at most this many results")
    max_mb: float | None = Field(None, gt=0, description="keep the database under this size")
    check_every_s: float = Field(600, gt=0)


class JournalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path = Field(Path("data/journal.sqlite"), description="SQLite file (relative to the site file)")
    durability: Literal["normal", "full"] = Field(
        "normal", description="normal survives a crash; full also a power cut (an fsync per commit)"
    )
    retention: RetentionConfig = Field(default_factory=RetentionConfig)


class ArchiveConfig(BaseModel):
    """Images kept for review: every NG part, a sampled share of OK parts, within a disk quota."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    path: Path = Field(Path("data/archive"), description="folder (relative to the site file)")
    ok_sample_rate: float = Field(0.01, ge=0, le=1, description="share of OK parts archived")
    annotated: bool = Field(
        False,
        description="also write an annotated copy (boxes, masks, verdict) at inspection time; without it the "
        "console and the hub draw boxes and verdict on the raw image when asked",
    )
    format: Literal["png", "jpg"] = "jpg"
    jpeg_quality: int = Field(92, ge=10, le=100)
    quota_mb: float = Field(2048, gt=0, description="oldest images are deleted beyond this")
    min_free_mb: float = Field(500, ge=0, description="stop archiving when the disk has less free space")
    queue: int = Field(64, ge=1, description="images waiting to be written; beyond it they are skipped")


class CaptureConfig(BaseModel):
    """Frames the model is unsure about (best confidence inside `band`) or that a reviewer marked, kept
    in their own archive and quota for labelling (`edge-inspect dataset from-archive`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    path: Path = Field(Path("data/capture"), description="folder (relative to the site file)")
    band: tuple[float, float] = Field(
        (0.25, 0.6),
        description="keep a part when its best detection confidence is >= low and < high "
        "(detections under the model's `conf` never reach it)",
    )
    anomaly_band: tuple[float, float] = Field(
        (0.8, 1.25),
        description="lines with an anomaly model: keep a part when its image score over the image "
        "threshold is >= low and < high (near the threshold: not sure)",
    )
    sample_rate: float = Field(1.0, ge=0, le=1, description="share of the parts in the band that are kept")
    reviewed: bool = Field(True, description="also keep parts a reviewer marked (console)")
    format: Literal["png", "jpg"] = "png"
    jpeg_quality: int = Field(95, ge=10, le=100)
    quota_mb: float = Field(1024, gt=0, description="oldest captures are deleted beyond this")
    min_free_mb: float = Field(500, ge=0, description="stop capturing when the disk has less free space")
    queue: int = Field(16, ge=1, description="parts waiting to be written; beyond it they are skipped")

    @field_validator("band")
    @classmethod
    def _band_ordered(cls, band: tuple[float, float]) -> tuple[float, float]:
        low, high = band
        if not 0 <= low < high <= 1:
            raise ValueError(f"band {list(band)} must be [low, high] with 0 <= low < high <= 1")
        return band

    @field_validator("anomaly_band")
    @classmethod
    def _anomaly_band_ordered(cls, band: tuple[float, float]) -> tuple[float, float]:
        low, high = band
        if not 0 <= low < high:
            raise ValueError(f"anomaly_band {list(band)} must be [low, high] with 0 <= low < high")
        return band


class MetricsConfig(BaseModel):
    """Prometheus `/metrics` and `/healthz` over HTTP."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535, description="0 = any free port")


class ReloadConfig(BaseModel):
    """Hot reload of changed line files and model files (validated before they replace the running one)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    poll_s: float = Field(1.0, gt=0)


class InferenceConfig(BaseModel):
    """One inference thread budget for all lines of the agent (see edge_agent/inference_budget.py)."""

    model_config = ConfigDict(extra="forbid")

    threads: int | None = Field(
        None, gt=0, description="intra-op threads for inference, all lines together (default: physical cores)"
    )
    concurrent: int | Literal["auto"] = Field(
        "auto",
        description=(
            "inferences running at once; each gets threads / concurrent threads. auto: 2 on a PC with 2 or "
            "more inference threads when a line runs free, else 1 (a lone triggered part keeps every thread)"
        ),
    )

    @field_validator("concurrent")
    @classmethod
    def _at_least_one(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("concurrent must be at least 1 (or auto)")
        return value


class MemoryConfig(BaseModel):
    """The agent process's own memory housekeeping (edge_agent/heap_trim.py)."""

    model_config = ConfigDict(extra="forbid")

    trim_every_s: float = Field(
        60.0,
        ge=0,
        description="give the C heap's free pages back to the system this often (glibc's malloc_trim; "
        "0: never): without it RSS creeps up in steps over hours while the memory in use stays flat",
    )
    malloc_arenas: int = Field(
        2,
        ge=0,
        description="at most this many C heaps for all the agent's threads (glibc's M_ARENA_MAX; 0: glibc's "
        "default, 8 per core): fewer heaps, fewer half-used pages kept",
    )


class SiteConfig(BaseModel):
    """The site file. `publishers` entries are validated against the publisher registry by `type:`."""

    model_config = ConfigDict(extra="forbid")

    site: str = Field(min_length=1, description="site / plant id, in every result")
    lines: list[str] = Field(
        default_factory=lambda: ["lines/*.yaml"], description="line files or globs (relative to this file)"
    )
    journal: JournalConfig = Field(default_factory=JournalConfig)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    reload: ReloadConfig = Field(default_factory=ReloadConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    publishers: list[dict[str, Any]] = Field(
        default_factory=list, description="outputs, each chosen by `type:` (zmq, opcua, mes, ...)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    on_line_load_failure: Literal["refuse", "run_others"] = Field(
        "refuse",
        description="a line whose model cannot load at start: refuse to start (exit 1, the reason), or "
        "run_others: start the other lines, the failed one in state error until a fixed file reloads it",
    )
    hub: HubLinkConfig | None = Field(
        None, description="the programme hub this agent registers with (docs/hub.md); results go by "
                          "`type: mes`"
    )


# -- loading ---------------------------------------------------------------------------------------


@dataclass
class PublisherEntry:
    type: str
    config: BaseModel
    index: int


@dataclass
class LoadedLine:
    config: LineConfig
    file: Path
    doc: YamlDocument


@dataclass
class AgentConfig:
    """The site file and its lines, validated, with paths made absolute."""

    site: SiteConfig
    site_file: Path | None
    lines: list[LoadedLine] = field(default_factory=list)
    publishers: list[PublisherEntry] = field(default_factory=list)


def load_line(path: str | Path) -> LoadedLine:
    """Load and validate one line file. `name` defaults to the file name without `.yaml`."""
    path = Path(path).resolve()
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.issue((), "a line file must be a mapping (key: value)")])
    data = dict(doc.data)
    data.setdefault("name", path.stem)
    config = validate(LineConfig, doc, data=data)
    return LoadedLine(resolve_model_paths(config, path.parent), path, doc)


def validate_publishers(
    site: SiteConfig, doc: YamlDocument | None, base: Path | None = None
) -> list[PublisherEntry]:
    """Check every `publishers:` entry against the registry; every problem gets file and line.

    With `base`, relative paths in publisher configs are resolved against it (the site file's folder).
    """
    from edge_agent.publishers.registry import PublisherUnavailable, publisher_types, resolve_publisher

    entries, issues = [], []
    for i, raw in enumerate(site.publishers):
        where = ("publishers", i)
        kind = raw.get("type")
        if kind is None:
            issues.append(_issue(doc, (*where,), f"needs a `type:`, one of: {', '.join(publisher_types())}"))
            continue
        try:
            config_model, _cls = resolve_publisher(str(kind))
        except KeyError:
            hint = suggest(str(kind), publisher_types())
            msg = f"unknown publisher type {kind!r}" + (f" (did you mean {hint!r}?)" if hint else "")
            msg += f"; valid types: {', '.join(publisher_types())}"
            issues.append(_issue(doc, (*where, "type"), msg))
            continue
        except PublisherUnavailable as exc:
            issues.append(_issue(doc, (*where, "type"), str(exc)))
            continue
        try:
            if doc is not None:
                config = validate(config_model, doc, prefix=where, data=raw)
            else:
                config = config_model.model_validate(raw)
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        if base is not None:
            config = resolve_model_paths(config, base)
        entries.append(PublisherEntry(type=str(kind), config=config, index=i))
    if issues:
        raise ConfigError(issues)
    return entries


def _issue(doc: YamlDocument | None, path: tuple, message: str) -> ConfigIssue:
    return doc.issue(path, message) if doc else ConfigIssue(None, None, None, path, message)


def find_site_file(path: str | Path) -> Path:
    """A site file, or a folder holding `agent.yaml`."""
    p = Path(path)
    if p.is_dir():
        for name in ("agent.yaml", "agent.yml", "site.yaml"):
            if (p / name).is_file():
                return p / name
        raise ConfigError([ConfigIssue(p, None, None, (), "folder has no agent.yaml site file")])
    return p


def load_agent_config(path: str | Path) -> AgentConfig:
    """Load the site file (or `<folder>/agent.yaml`) and all its lines; collect every error of every file."""
    site_file = find_site_file(path).resolve()
    doc = load_yaml(site_file)
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.issue((), "the site file must be a mapping (key: value)")])
    site = validate(SiteConfig, doc)
    base = site_file.parent
    site = resolve_model_paths(site, base)
    issues: list[ConfigIssue] = []
    try:
        publishers = validate_publishers(site, doc, base)
    except ConfigError as exc:
        issues.extend(exc.issues)
        publishers = []
    lines: list[LoadedLine] = []
    for i, pattern in enumerate(site.lines):
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        matches = sorted(globlib.glob(full)) if globlib.has_magic(full) else [full]
        if not globlib.has_magic(full) and not Path(full).is_file():
            issues.append(doc.issue(("lines", i), f"line file {full} does not exist"))
            continue
        for match in matches:
            try:
                lines.append(load_line(match))
            except ConfigError as exc:
                issues.extend(exc.issues)
    seen: dict[str, Path] = {}
    for line in lines:
        if line.config.name in seen:
            issues.append(
                line.doc.issue(
                    ("name",), f"line name {line.config.name!r} is also used by {seen[line.config.name]}"
                )
            )
        seen[line.config.name] = line.file
    if not lines and not issues:
        issues.append(doc.issue(("lines",), "no line files found"))
    if issues:
        raise ConfigError(issues)
    return AgentConfig(site=site, site_file=site_file, lines=lines, publishers=publishers)


def agent_json_schema() -> dict[str, Any]:
    """JSON Schemas for editors: the site file (with every registered publisher) and a line file."""
    from edge_agent.publishers.registry import available_publisher_models

    site = SiteConfig.model_json_schema()
    models = available_publisher_models()
    if models:
        # the site model keeps publishers as raw mappings (validated per type at load); show editors the union
        one_of = []
        for kind, model in models.items():
            sub = model.model_json_schema()
            site.setdefault("$defs", {}).update(sub.pop("$defs", {}))
            sub["title"] = f"{kind} publisher"
            one_of.append(sub)
        items = {"oneOf": one_of}
        site["properties"]["publishers"] = {"type": "array", "title": "Publishers", "items": items}
    return {
        "site": {"$schema": "https://json-schema.org/draft/2020-12/schema", **site},
        "line": {"$schema": "https://json-schema.org/draft/2020-12/schema", **LineConfig.model_json_schema()},
    }


__all__ = [
    "AgentConfig",
    "ArchiveConfig",
    "CameraConfig",
    "CaptureConfig",
    "FreeRunTrigger",
    "JournalConfig",
    "LineConfig",
    "LoadedLine",
    "MetricsConfig",
    "ModelConfig",
    "PublisherEntry",
    "ReloadConfig",
    "SiteConfig",
    "TriggeredTrigger",
    "agent_json_schema",
    "find_site_file",
    "load_agent_config",
    "load_line",
    "validate_publishers",
]
