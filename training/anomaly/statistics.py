"""The statistics method for aligned parts: per-pixel statistics of the good images, no network.

For parts that sit in the same place in every picture (a fixture, a conveyor stop, a strip cut to length),
each pixel of a good part varies little around its own typical grey level. Training (`fit_statistics`, numpy
only, seconds) stores per pixel the centre (mean, or the median) and the spread (standard deviation, or the
MAD x 1.4826) of the good images at the model's input size, plus a floor in grey levels so that a pixel that
never varied does not make every speck an alarm. Optionally a tolerance of t pixels for parts that shift a
little: the band [min, max] of the centres within t pixels, the largest spread within t pixels.

The anomaly map (`score_maps`, and the same in the exported graph, `statistics_onnx`):

    z = (relu(g - hi) + relu(lo - g)) / spread          g = the mean of the R, G, B planes, 0-255
    map = max(mean of z along a horizontal line of L px, the same along a vertical line)   (L = `line`)
    score = max of the map

`polarity` "dark" keeps only the `lo - g` term (defects darker than the part), "bright" only `g - hi`.
`line` > 1 averages z along short lines: thin cracks and scratches add up along their length, the speckle of
the texture does not (L = 1: the map is z itself). With `line: auto` the length is chosen among
`line_choices` on held-out good images and the same images with the expected defects painted on them
(`training.anomaly.defects`): the length whose scores separate them best (image AUROC, then the escape at
the target false-reject rate). The evaluation set is never used to choose.

The run folder holds `config.json`, `statistics.npz` (the constants), `held_out.txt` and `fit.json` (the
choice of line length with its figures, the CPU seconds).

Example (an aligned part with a dark line painted on):
    >>> rng = np.random.default_rng(0)
    >>> part = np.tile(np.linspace(60, 200, 32, dtype=np.float32), (24, 1))
    >>> good = np.clip(part + rng.normal(0, 4, (40, 24, 32)), 0, 255).astype(np.uint8)
    >>> stats = fit_arrays(np.repeat(good[..., None], 3, -1), StatisticsConfig(good="", imgsz=(24, 32)))
    >>> bad = good[0].copy(); bad[12, 4:28] -= 40
    >>> s, _ = score_maps(stats, np.repeat(np.stack([good[1], bad])[..., None], 3, -1))
    >>> bool(s[1] > 2 * s[0])
    True
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from training.anomaly.defects import parse_defects, synthesise
from training.anomaly.images import read_many, split_run_images
from training.anomaly.metrics import auroc, escape_at_false_reject
from training.errors import TrainingInputError

STATISTICS_FILE = "statistics.npz"
FIT_FILE = "fit.json"
CENTRES = ("mean", "median")
POLARITIES = ("both", "dark", "bright")
OPSET = 17


@dataclass
class StatisticsConfig:
    good: str  # folder of good images (or an MVTec root: its train/good)
    imgsz: tuple[int, int] = (256, 256)  # model input (H, W): the part's own resolution where it is small
    centre: str = "mean"  # "mean" (with the standard deviation) or "median" (with the MAD)
    floor: float = 1.0  # grey levels added to every pixel's spread
    tolerance: int = 0  # pixels a part may shift: band of centres and largest spread within this distance
    polarity: str = "both"  # "dark", "bright" or "both": which deviations count
    line: int | str = 1  # odd length of the line averages of the map (1: none), or "auto"
    line_choices: tuple[int, ...] = (1, 9, 15, 25)  # the lengths `auto` tries
    defects: dict[str, dict[str, Any]] | list[str] | None = None  # painted on held-out images for `auto`
    max_defects: int = 1
    paintings: int = 3  # painted copies of each held-out image for `auto`
    held_out: float = 0.1  # share of good images kept for the operating point (and `auto`)
    target_false_reject: float = 0.05  # where `auto` compares the escape rates (ties of AUROC)
    seed: int = 0

    def __post_init__(self) -> None:
        self.imgsz = (int(self.imgsz[0]), int(self.imgsz[1]))
        self.line_choices = tuple(int(v) for v in self.line_choices)
        if self.centre not in CENTRES:
            raise TrainingInputError(f"centre {self.centre!r}: expected one of {', '.join(CENTRES)}")
        if self.polarity not in POLARITIES:
            raise TrainingInputError(f"polarity {self.polarity!r}: expected one of {', '.join(POLARITIES)}")
        if self.floor <= 0:
            raise TrainingInputError(f"floor {self.floor}: must be > 0 (grey levels added to the spread)")
        if self.tolerance < 0:
            raise TrainingInputError(f"tolerance {self.tolerance}: must be >= 0 pixels")
        lengths = self.line_choices if self.line == "auto" else (self.line,)
        for n in lengths:
            if not isinstance(n, int) or isinstance(n, bool) or n < 1 or n % 2 == 0:
                raise TrainingInputError(f"line {n!r}: expected an odd number of pixels >= 1, or 'auto'")
        parse_defects(self.defects)  # fail early, with the kind named

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["method"] = "statistics"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StatisticsConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class Statistics:
    """The fitted constants, float32 (H, W) each: the band [lo, hi] of the centre and 1 / spread."""

    lo: np.ndarray
    hi: np.ndarray
    inv_spread: np.ndarray
    line: int
    polarity: str

    @property
    def imgsz(self) -> tuple[int, int]:
        return int(self.lo.shape[0]), int(self.lo.shape[1])

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path, lo=self.lo, hi=self.hi, inv_spread=self.inv_spread, line=self.line, polarity=self.polarity
        )

    @classmethod
    def load(cls, path: Path) -> Statistics:
        with np.load(path) as z:
            return cls(z["lo"], z["hi"], z["inv_spread"], int(z["line"]), str(z["polarity"]))


@dataclass
class StatisticsFit:
    """What fitting found: the line length chosen (and each candidate's held-out figures), the time."""

    line: int
    candidates: list[dict[str, float]] = field(default_factory=list)
    train_images: int = 0
    held_out_images: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def grey(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, H, W) float32 grey levels 0-255: the mean of the planes, as the graph."""
    return images.astype(np.float32).mean(axis=-1)


def _centre_spread(g: np.ndarray, centre: str) -> tuple[np.ndarray, np.ndarray]:
    if centre == "median":
        c = np.median(g, axis=0)
        return c.astype(np.float32), (1.4826 * np.median(np.abs(g - c), axis=0)).astype(np.float32)
    c64 = g.mean(axis=0, dtype=np.float64)
    return c64.astype(np.float32), g.std(axis=0, dtype=np.float64).astype(np.float32)


def fit_arrays(images: np.ndarray, cfg: StatisticsConfig, line: int | None = None) -> Statistics:
    """The constants from good images (N, H, W, 3) uint8 RGB at the model's size."""
    if len(images) < 2:
        raise TrainingInputError(f"need at least 2 good images to fit statistics, got {len(images)}")
    c, s = _centre_spread(grey(images), cfg.centre)
    lo, hi = c, c
    if cfg.tolerance:
        k = np.ones((2 * cfg.tolerance + 1, 2 * cfg.tolerance + 1), np.uint8)
        lo, hi, s = cv2.erode(c, k), cv2.dilate(c, k), cv2.dilate(s, k)
    inv = (1.0 / (s + np.float32(cfg.floor))).astype(np.float32)
    chosen = int(line if line is not None else (cfg.line if cfg.line != "auto" else 1))
    return Statistics(lo.astype(np.float32), hi.astype(np.float32), inv, chosen, cfg.polarity)


def _line_max(z: np.ndarray, line: int) -> np.ndarray:
    """max(horizontal, vertical) mean over `line` px, zeros outside the image (as the graph's AveragePool)."""
    if line <= 1:
        return z
    border = cv2.BORDER_CONSTANT
    return np.maximum(cv2.blur(z, (line, 1), borderType=border), cv2.blur(z, (1, line), borderType=border))


def deviation_maps(stats: Statistics, images: np.ndarray) -> np.ndarray:
    """(N, H, W) float32 z maps before the line averages."""
    g = grey(images)
    dev = np.zeros_like(g)
    if stats.polarity in ("both", "bright"):
        dev += np.maximum(g - stats.hi, 0)
    if stats.polarity in ("both", "dark"):
        dev += np.maximum(stats.lo - g, 0)
    return dev * stats.inv_spread


def score_maps(
    stats: Statistics, images: np.ndarray, line: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(scores (N,), maps (N, H, W)) of images (N, H, W, 3) uint8 RGB at the model's size: the training
    side's own inference, what the exported graph computes."""
    n = stats.line if line is None else line
    maps = np.zeros((len(images), *stats.imgsz), np.float32)
    for i, z in enumerate(deviation_maps(stats, images)):
        maps[i] = _line_max(z, n)
    return maps.reshape(len(maps), -1).max(axis=1, initial=0.0), maps


def choose_line(
    stats: Statistics, held: np.ndarray, cfg: StatisticsConfig
) -> tuple[int, list[dict[str, float]]]:
    """The line length (of `cfg.line_choices`) that best separates held-out good images from the same images
    with the expected defects painted on; each candidate's AUROC and escape at the target false reject."""
    specs = parse_defects(cfg.defects)
    rng = np.random.default_rng(cfg.seed + 1)
    painted = np.stack(
        [synthesise(rng, np.ascontiguousarray(im), specs, cfg.max_defects)[0] for im in held
         for _ in range(cfg.paintings)]
    )  # fmt: skip
    z_good, z_bad = deviation_maps(stats, held), deviation_maps(stats, painted)
    rows = []
    for n in cfg.line_choices:
        sg = np.array([_line_max(z, n).max() for z in z_good])
        sb = np.array([_line_max(z, n).max() for z in z_bad])
        a = auroc(np.r_[sg, sb], np.r_[np.zeros(len(sg)), np.ones(len(sb))])
        esc = escape_at_false_reject(sg, sb, (cfg.target_false_reject,))
        rows.append({"line": n, "auroc": float(a), "escape": float(next(iter(esc.values()))["escape_rate"])})
    best = max(rows, key=lambda r: (round(r["auroc"], 3), -r["escape"], -r["line"]))
    return int(best["line"]), rows


def fit_statistics(cfg: StatisticsConfig, run_dir: str | Path, echo: Any = None) -> Path:
    """Fit the run in `run_dir` (config.json, statistics.npz, held_out.txt, fit.json); returns it."""
    say = echo or (lambda s: None)
    t0, c0 = time.perf_counter(), time.process_time()
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    train_paths, held_paths = split_run_images(cfg.good, cfg.held_out, cfg.seed, run)
    _, good = read_many(train_paths, cfg.imgsz)
    say(
        f"statistics of {len(good)} good images ({len(held_paths)} held out for the operating point) "
        f"at {cfg.imgsz[0]}x{cfg.imgsz[1]}, centre {cfg.centre}, polarity {cfg.polarity}"
    )
    stats = fit_arrays(good, cfg)
    del good
    fit = StatisticsFit(line=stats.line, train_images=len(train_paths), held_out_images=len(held_paths))
    if cfg.line == "auto":
        _, held = read_many(held_paths, cfg.imgsz)
        if len(held) < 2:
            raise TrainingInputError("line: auto needs at least 2 held-out good images (raise held_out)")
        stats.line, fit.candidates = choose_line(stats, held, cfg)
        for r in fit.candidates:
            say(f"  line {r['line']:3d}: held-out AUROC {r['auroc']:.3f}, escape {100 * r['escape']:.0f} % "
                f"at {100 * cfg.target_false_reject:g} % false reject (painted defects)")  # fmt: skip
        say(f"  line {stats.line} chosen")
    fit.line = stats.line
    stats.save(run / STATISTICS_FILE)
    fit.cpu_s, fit.wall_s = time.process_time() - c0, time.perf_counter() - t0
    (run / FIT_FILE).write_text(json.dumps(fit.to_dict(), indent=2))
    say(f"done: {fit.cpu_s:.1f} CPU-s ({fit.wall_s:.1f} s wall); {run / STATISTICS_FILE}")
    return run


def is_statistics_run(run: str | Path) -> bool:
    return (Path(run) / STATISTICS_FILE).is_file()


def load_statistics(run: str | Path) -> tuple[Statistics, StatisticsConfig, dict[str, Any]]:
    """(constants, config, bookkeeping as `train.load_net` gives it) of a fitted run."""
    run = Path(run)
    if not is_statistics_run(run):
        raise TrainingInputError(f"{run}: no {STATISTICS_FILE} (fit first: edge-inspect anomaly train)")
    cfg = StatisticsConfig.from_dict(json.loads((run / "config.json").read_text()))
    fit = json.loads((run / FIT_FILE).read_text()) if (run / FIT_FILE).is_file() else {}
    info = {"step": 0, "train_s": fit.get("wall_s", 0.0), "cpu_s": fit.get("cpu_s", 0.0), "history": [],
            "fit": fit}  # fmt: skip
    return Statistics.load(run / STATISTICS_FILE), cfg, info


def statistics_onnx(stats: Statistics) -> Any:
    """The anomaly contract's graph (docs/anomaly.md) computing `score_maps` with the constants inside."""
    from onnx import TensorProto, helper, numpy_helper

    h, w = stats.imgsz

    def const(name: str, a: np.ndarray) -> Any:
        return numpy_helper.from_array(np.ascontiguousarray(a, np.float32).reshape(1, 1, h, w), name)

    inits = [const("lo", stats.lo), const("hi", stats.hi), const("inv_spread", stats.inv_spread),
             numpy_helper.from_array(np.array(255.0, np.float32), "scale255")]  # fmt: skip
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["grey01"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["grey01", "scale255"], ["grey"]),
    ]
    terms = []
    if stats.polarity in ("both", "bright"):
        nodes += [
            helper.make_node("Sub", ["grey", "hi"], ["above"]),
            helper.make_node("Relu", ["above"], ["up"]),
        ]
        terms.append("up")
    if stats.polarity in ("both", "dark"):
        nodes += [
            helper.make_node("Sub", ["lo", "grey"], ["below"]),
            helper.make_node("Relu", ["below"], ["dn"]),
        ]
        terms.append("dn")
    if len(terms) == 2:
        nodes.append(helper.make_node("Add", terms, ["dev"]))
    else:
        nodes.append(helper.make_node("Identity", terms, ["dev"]))
    n = stats.line
    map_name = "anomaly_map" if n <= 1 else "z"
    nodes.append(helper.make_node("Mul", ["dev", "inv_spread"], [map_name]))
    if n > 1:
        p = n // 2
        nodes += [
            helper.make_node("AveragePool", ["z"], ["zh"], kernel_shape=[1, n], pads=[0, p, 0, p],
                             count_include_pad=1),
            helper.make_node("AveragePool", ["z"], ["zv"], kernel_shape=[n, 1], pads=[p, 0, p, 0],
                             count_include_pad=1),
            helper.make_node("Max", ["zh", "zv"], ["anomaly_map"]),
        ]  # fmt: skip
    nodes.append(helper.make_node("ReduceMax", ["anomaly_map"], ["pred_score"], axes=[1, 2, 3], keepdims=0))
    graph = helper.make_graph(
        nodes,
        "edge_inspect_statistics",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, h, w])],
        [
            helper.make_tensor_value_info("pred_score", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["batch", 1, h, w]),
        ],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-inspect"
    )
    model.ir_version = 8  # what ONNX Runtime and OpenVINO read for opset 17
    return model


def export_statistics_onnx(run: str | Path, out_path: str | Path) -> tuple[Path, StatisticsConfig]:
    """Write the run's graph to `out_path` (metadata is set by `export.set_metadata` afterwards)."""
    import onnx

    stats, cfg, _ = load_statistics(run)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = statistics_onnx(stats)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out, cfg
