"""Train an anomaly model from good images: a segmentation network learns to find synthetic defects painted
onto the line's own good images (and real NG parts, when reviews gave some). CPU, offline, torch.

The run folder holds `config.json`, `checkpoint.pt` (saved every `save_every_s` seconds and at the end, with
the optimiser, random state, step and the time spent) and `held_out.txt` (good images kept out of training
for the operating point). `resume=True` continues a run where its checkpoint left off; `hours` is the budget
of the whole run, resumes included, and the learning rate follows it (cosine over the budget).

Example (needs the `train` extra; a few seconds):
    >>> cfg = AnomalyTrainConfig(good="images/good", imgsz=(64, 64), max_steps=20)   # doctest: +SKIP
    >>> run = train_anomaly(cfg, "runs/anomaly/exp")                                # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.anomaly.defects import parse_defects, synthesise
from training.anomaly.images import (
    EvalSet,
    find_mask,
    list_images,
    read_many,
    read_mask,
    split_run_images,
)
from training.errors import TrainingInputError

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


@dataclass
class AnomalyTrainConfig:
    good: str  # folder of good images (or an MVTec root: its train/good)
    imgsz: tuple[int, int] = (256, 256)  # model input (H, W), multiples of 8
    crop: tuple[int, int] | None = None  # training crop (H, W); None: whole images
    width: int = 8  # network width (channels at full resolution)
    pool: int = 3  # k x k mean of the map before its max = image score
    defects: dict[str, dict[str, Any]] | list[str] | None = (
        None  # kinds to synthesise (defects.parse_defects)
    )
    max_defects: int = 3
    defect_probability: float = 0.5  # share of training examples that get synthetic defects
    batch: int = 8
    lr: float = 2e-3
    ema_decay: float = 0.99  # weight averaging (0: none); the average is what gets exported
    hours: float = 0.25
    max_steps: int | None = None  # stop after this many steps (tests); the time budget still applies
    seed: int = 0
    held_out: float = 0.1  # share of good images kept for the operating point
    flips: tuple[bool, bool] = (True, True)  # horizontal, vertical
    ng: str | None = None  # reviewed NG parts: real defect examples
    ng_masks: str | None = None  # their masks (else beside them as <stem>_mask.png); none: image-level only
    real_share: float = 0.25  # share of defect examples taken from `ng` when there are some
    jpeg_quality: tuple[int, int] | None = None  # re-encode every example as JPEG (painted and good alike)
    threads: int | None = None  # torch threads (default: torch's)
    save_every_s: float = 60.0
    log_every_s: float = 10.0

    def __post_init__(self) -> None:
        self.imgsz = (int(self.imgsz[0]), int(self.imgsz[1]))
        self.crop = None if self.crop is None else (int(self.crop[0]), int(self.crop[1]))
        self.flips = (bool(self.flips[0]), bool(self.flips[1]))
        from training.anomaly.net import MULTIPLE

        for name, size in (("imgsz", self.imgsz), ("crop", self.crop)):
            if size is not None and (size[0] % MULTIPLE or size[1] % MULTIPLE or min(size) < MULTIPLE):
                raise TrainingInputError(
                    f"{name} {list(size)}: height and width must be multiples of {MULTIPLE}"
                )
        if self.crop is not None and (self.crop[0] > self.imgsz[0] or self.crop[1] > self.imgsz[1]):
            raise TrainingInputError(f"crop {list(self.crop)} is larger than imgsz {list(self.imgsz)}")
        parse_defects(self.defects)  # fail early, with the kind named

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnomalyTrainConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class RealExamples:
    """Reviewed NG parts at model resolution; `masks[i]` None where only the image-level label is known."""

    images: np.ndarray
    masks: list[np.ndarray | None] = field(default_factory=list)


def load_real_examples(cfg: AnomalyTrainConfig) -> RealExamples | None:
    if not cfg.ng:
        return None
    paths, images = read_many(list_images(cfg.ng), cfg.imgsz)
    masks_dir = Path(cfg.ng_masks) if cfg.ng_masks else None
    masks = []
    for p in paths:
        m = find_mask(p, masks_dir)
        masks.append(read_mask(m, cfg.imgsz) if m is not None else None)
    if not len(paths):
        raise TrainingInputError(f"ng folder {cfg.ng}: no readable images")
    return RealExamples(images, masks)


def _lr_at(cfg: AnomalyTrainConfig, progress: float, step: int) -> float:
    warm = min(1.0, (step + 1) / 50)
    return cfg.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _random_crop(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, crop: tuple[int, int] | None):
    if crop is None:
        return img, mask
    h, w = img.shape[:2]
    y = int(rng.integers(0, h - crop[0] + 1))
    x = int(rng.integers(0, w - crop[1] + 1))
    return img[y : y + crop[0], x : x + crop[1]], mask[y : y + crop[0], x : x + crop[1]]


def _augment(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, flips: tuple[bool, bool]):
    if flips[0] and rng.random() < 0.5:
        img, mask = img[:, ::-1], mask[:, ::-1]
    if flips[1] and rng.random() < 0.5:
        img, mask = img[::-1], mask[::-1]
    gain = rng.uniform(0.9, 1.1)
    img = np.clip(img.astype(np.float32) * gain + rng.uniform(-8, 8), 0, 255).astype(np.uint8)
    return img, np.ascontiguousarray(mask)


def _jpeg(rng: np.random.Generator, img: np.ndarray, quality: tuple[int, int]) -> np.ndarray:
    import cv2

    q = int(rng.integers(quality[0], quality[1] + 1))
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img), [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).reshape(img.shape) if ok else img


def make_batch(
    rng: np.random.Generator,
    cfg: AnomalyTrainConfig,
    good: np.ndarray,
    specs: list[Any],
    real: RealExamples | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images N,3,h,w float 0-1, masks N,1,h,w float, pixel-labelled N bool). Crops of good images, a share
    with synthetic defects; a share of those replaced by real NG parts when there are some."""
    xs, ys, labelled = [], [], []
    for _ in range(cfg.batch):
        mask: np.ndarray
        known = True
        if real is not None and rng.random() < cfg.defect_probability * cfg.real_share:
            i = int(rng.integers(len(real.images)))
            img = real.images[i]
            m = real.masks[i]
            known = m is not None
            mask = m.astype(np.uint8) if m is not None else np.ones(img.shape[:2], np.uint8)
            if known:
                img, mask = _random_crop(rng, img, mask, cfg.crop)
        else:
            img = good[int(rng.integers(len(good)))]
            img, mask = _random_crop(rng, img, np.zeros(img.shape[:2], np.uint8), cfg.crop)
            if rng.random() < cfg.defect_probability:
                img, mask = synthesise(rng, np.ascontiguousarray(img), specs, cfg.max_defects)
        img, mask = _augment(rng, img, mask, cfg.flips)
        if cfg.jpeg_quality is not None:  # painted defects get the compression the real texture has
            img = _jpeg(rng, img, cfg.jpeg_quality)
        if not known and cfg.crop is not None and img.shape[:2] != cfg.crop:  # image-level only: shrink whole
            import cv2

            img = cv2.resize(img, (cfg.crop[1], cfg.crop[0]), interpolation=cv2.INTER_AREA)
            mask = np.ones(cfg.crop, np.uint8)
        xs.append(img.transpose(2, 0, 1))
        ys.append(mask[None])
        labelled.append(known)
    x = np.stack(xs).astype(np.float32) / 255.0
    y = np.stack(ys).astype(np.float32)
    return x, y, np.array(labelled)


def focal_loss(logits: Any, target: Any, labelled: Any, gamma: float = 2.0) -> Any:
    """Focal loss per pixel where the mask is known; for an image-level NG part (no mask) the BCE of its
    highest logit against 1 (somewhere in it there is a defect)."""
    import torch
    from torch.nn import functional as F

    loss = logits.new_zeros(())
    if labelled.any():
        lg, tg = logits[labelled], target[labelled]
        ce = F.binary_cross_entropy_with_logits(lg, tg, reduction="none")
        pt = torch.exp(-ce)
        loss = loss + ((1 - pt) ** gamma * ce).mean() * 10
    if (~labelled).any():
        peak = torch.amax(logits[~labelled], dim=(1, 2, 3))
        loss = loss + F.binary_cross_entropy_with_logits(peak, torch.ones_like(peak)).mean() * 0.1
    return loss


def torch_scores(net: Any, images: np.ndarray, pool: int, batch: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(image scores N, maps N,H,W) from the network in torch, as the exported graph computes them."""
    import torch

    from training.anomaly.net import image_scores

    scores, maps = [], []
    was_training = net.training
    net.eval()
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i : i + batch].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
            logits = net(x)
            scores.append(image_scores(logits, pool).numpy())
            maps.append(torch.sigmoid(logits)[:, 0].numpy())
    net.train(was_training)
    return np.concatenate(scores), np.concatenate(maps)


def _update_ema(ema: Any, net: Any, decay: float, step: int) -> None:
    """ema = d * ema + (1 - d) * net, d ramping up over the first steps; batch-norm statistics copied."""
    import torch

    d = min(decay, (1 + step) / (10 + step)) if decay > 0 else 0.0
    with torch.no_grad():
        for e, p in zip(ema.state_dict().values(), net.state_dict().values()):
            if e.dtype.is_floating_point and d > 0:
                e.mul_(d).add_(p.detach(), alpha=1 - d)
            else:
                e.copy_(p)


def _progress_line(step: int, spent: float, budget: float, loss: float, lr: float, imgs_per_s: float) -> str:
    def mmss(s: float) -> str:
        return f"{int(s // 60):d}:{int(s % 60):02d}"

    return (
        f"step {step:6d}  {mmss(spent)}/{mmss(budget)} ({100 * min(1.0, spent / budget):3.0f}%)  "
        f"loss {loss:.4f}  lr {lr:.2e}  {imgs_per_s:.1f} img/s"
    )


def train_anomaly(
    cfg: AnomalyTrainConfig | None,
    run_dir: str | Path,
    resume: bool = False,
    hours: float | None = None,
    eval_set: EvalSet | None = None,
    eval_every_s: float | None = None,
    echo: Callable[[str], None] | None = None,
    max_steps: int | None = None,
) -> Path:
    """Train (or, with `resume`, continue) the run in `run_dir`; returns it. `eval_set`: its image AUROC is
    printed every `eval_every_s` seconds of training (not counted as training time), for progress only.
    `hours` / `max_steps` replace the config's (a resumed run keeps its own unless given)."""
    import torch

    from training.anomaly.metrics import auroc
    from training.anomaly.net import SegNet

    say = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    run = Path(run_dir)
    ckpt_path = run / CHECKPOINT
    state: dict[str, Any] | None = None
    if resume:
        if not ckpt_path.is_file():
            raise TrainingInputError(f"cannot resume: {ckpt_path} does not exist")
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        cfg = AnomalyTrainConfig.from_dict(state["config"])
        say(f"resuming {run} at step {state['step']} ({state['train_s'] / 60:.1f} min spent)")
    elif cfg is None:
        raise TrainingInputError("no training config given")
    elif ckpt_path.exists():
        raise TrainingInputError(f"{run} already holds a run (resume it, or pick another folder)")
    assert cfg is not None
    if hours is not None:
        cfg.hours = float(hours)
    if max_steps is not None:
        cfg.max_steps = int(max_steps)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    train_paths, held = split_run_images(cfg.good, cfg.held_out, cfg.seed, run)
    _, good = read_many(train_paths, cfg.imgsz)
    if not len(good):
        raise TrainingInputError(f"{cfg.good}: no readable good images")
    specs = parse_defects(cfg.defects)
    real = load_real_examples(cfg)
    say(
        f"training on {len(good)} good images ({len(held)} held out for the operating point)"
        + (f", {len(real.images)} real NG parts" if real else "")
        + f"; synthetic defects: {', '.join(s.kind for s in specs)}; input {cfg.imgsz[0]}x{cfg.imgsz[1]}"
    )

    torch.manual_seed(cfg.seed)
    net = SegNet(cfg.width)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    ema = SegNet(cfg.width)  # the weights' moving average: what is evaluated and exported (steadier)
    ema.load_state_dict(net.state_dict())
    ema.eval()
    rng = np.random.default_rng(cfg.seed)
    step, train_s, cpu_s, history = 0, 0.0, 0.0, []
    if state is not None:
        net.load_state_dict(state["net"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        step, train_s, cpu_s, history = state["step"], state["train_s"], state["cpu_s"], state["history"]

    eval_data = None
    if eval_set is not None and eval_every_s:
        _, eg = read_many(eval_set.good, cfg.imgsz)
        _, ed = read_many(eval_set.defects, cfg.imgsz)
        eval_data = (eg, ed)

    def save() -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(
            {
                "config": cfg.to_dict(),
                "net": net.state_dict(),
                "ema": ema.state_dict(),
                "opt": opt.state_dict(),
                "rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "step": step,
                "train_s": train_s,
                "cpu_s": cpu_s,
                "history": history,
                "width": cfg.width,
            },
            tmp,
        )
        os.replace(tmp, ckpt_path)

    budget = cfg.hours * 3600
    net.train()
    t_last = time.perf_counter()
    c_last = time.process_time()
    last_log = last_save = last_eval = train_s
    losses: list[float] = []
    seen = 0
    while train_s < budget and (cfg.max_steps is None or step < cfg.max_steps):
        # progress by time, or by steps when a step limit comes first (then the schedule is reproducible)
        lr = _lr_at(cfg, max(train_s / budget, step / cfg.max_steps if cfg.max_steps else 0.0), step)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y, labelled = make_batch(rng, cfg, good, specs, real)
        logits = net(torch.from_numpy(x))
        loss = focal_loss(logits, torch.from_numpy(y), torch.from_numpy(labelled))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _update_ema(ema, net, cfg.ema_decay, step)
        step += 1
        seen += len(x)
        losses.append(float(loss.detach()))
        now, cnow = time.perf_counter(), time.process_time()
        train_s += now - t_last
        cpu_s += cnow - c_last
        t_last, c_last = now, cnow
        if train_s - last_log >= cfg.log_every_s:
            say(
                _progress_line(
                    step, train_s, budget, float(np.mean(losses)), lr, seen / max(1e-9, train_s - last_log)
                )
            )
            history.append({"step": step, "train_s": round(train_s, 1), "loss": float(np.mean(losses))})
            last_log, losses, seen = train_s, [], 0
        if eval_data is not None and eval_every_s and train_s - last_eval >= eval_every_s:
            sg, _ = torch_scores(ema, eval_data[0], cfg.pool)
            sd, _ = torch_scores(ema, eval_data[1], cfg.pool)
            a = auroc(np.r_[sg, sd], np.r_[np.zeros(len(sg)), np.ones(len(sd))])
            say(f"step {step:6d}  eval image AUROC {a:.3f}  ({cpu_s / 60:.1f} CPU-min)")
            history.append(
                {"step": step, "train_s": round(train_s, 1), "cpu_s": round(cpu_s, 1), "eval_image_auroc": a}
            )
            last_eval = train_s
            t_last, c_last = time.perf_counter(), time.process_time()  # evaluation time is not training time
        if train_s - last_save >= cfg.save_every_s:
            save()
            last_save = train_s
    save()
    say(
        f"done: {step} steps, {train_s / 60:.1f} min training ({cpu_s / 60:.1f} CPU-min); "
        f"checkpoint {ckpt_path}"
    )
    return run


def load_net(run_or_ckpt: str | Path) -> tuple[Any, AnomalyTrainConfig, dict[str, Any]]:
    """(network in eval mode, its config, the checkpoint's bookkeeping) from a run folder or checkpoint."""
    import torch

    from training.anomaly.net import SegNet

    path = Path(run_or_ckpt)
    ckpt = path / CHECKPOINT if path.is_dir() else path
    if not ckpt.is_file():
        raise TrainingInputError(f"{path}: no {CHECKPOINT} (train first: edge-inspect anomaly train)")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    cfg = AnomalyTrainConfig.from_dict(state["config"])
    net = SegNet(cfg.width)
    net.load_state_dict(state["ema"])
    net.eval()
    info = {k: state[k] for k in ("step", "train_s", "cpu_s", "history")}
    return net, cfg, info
