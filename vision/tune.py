"""`auto` by measurement: time each allowed runtime on this machine and keep the fastest.

Each candidate (`vision.runtime.Runtime`) runs the model through the whole `predict` (pre-processing,
inference, decoding) on the same textured frame at the model's input size, interleaved in rounds so a busy
moment of the host hits every candidate alike; the median time per frame decides. The result is cached in
`<cache dir>/tune/<model sha256>-<cpu key>.json`, so the next start (same model file, same CPU type, same
candidates and threads) reads it instead of timing again.

Example:
    >>> pairs = [Runtime(), Runtime("openvino", "CPU", "bf16")]
    >>> result = tune("models/demo/model.onnx", pairs)         # doctest: +SKIP
    >>> result.chosen, result.from_cache                        # doctest: +SKIP
    (Runtime(backend='openvino', device='CPU', precision='bf16'), False)
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from vision.runtime import Runtime, cpu_identity

ROUNDS = 3


@dataclass
class TuneResult:
    chosen: Runtime
    ms_per_frame: dict[str, float]  # str(runtime) -> median ms per frame through `predict`
    from_cache: bool
    cache_file: Path | None
    threads: int | None
    date: str = ""
    errors: dict[str, str] = field(default_factory=dict)  # candidates that failed to load or run

    def summary(self) -> str:
        ranked = sorted(self.ms_per_frame.items(), key=lambda kv: kv[1])
        rows = [f"  {r:<24} {ms:8.2f} ms/frame" for r, ms in ranked]
        rows += [f"  {r:<24} failed: {e}" for r, e in self.errors.items()]
        how = f"cached {self.date}" if self.from_cache else "measured now"
        return "\n".join([f"fastest: {self.chosen} ({how}, threads {self.threads or 'default'})", *rows])


def cache_file(cache_dir: Path, model_sha256: str, candidates: list[Runtime], threads: int | None) -> Path:
    cpu = cpu_identity()
    key = hashlib.sha256(
        json.dumps([str(cpu["key"]), sorted(map(str, candidates)), threads]).encode()
    ).hexdigest()[:12]
    return cache_dir / "tune" / f"{model_sha256[:16]}-{key}.json"


def auto_candidates(model_path: Path, device: str = "CPU") -> list[Runtime]:
    """The runtimes this machine can run for the model: ONNX Runtime FP32 (always) and INT8 (its file
    exists); OpenVINO f32/bf16 (and int8 where its IR exists) on `device` (AUTO: every device it has)."""
    from vision.openvino_session import available_devices, int8_ir_path
    from vision.runtime import ort_int8_path

    out = [Runtime()]
    if ort_int8_path(model_path).is_file():
        out.append(Runtime("onnxruntime", "CPU", "int8"))
    devices = available_devices()
    wanted = devices if device.upper() == "AUTO" else [d for d in devices if d == device.upper()]
    for dev in wanted:
        precisions = ["f32", "bf16"] if dev == "CPU" else ["f32"]
        if int8_ir_path(model_path).is_file():
            precisions.append("int8")
        out.extend(Runtime("openvino", dev, p) for p in precisions)
    return out


def tune(
    model_path: str | Path,
    candidates: list[Runtime],
    *,
    seconds: float = 2.0,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    refresh: bool = False,
    **load_options: Any,
) -> TuneResult:
    """The fastest of `candidates` for `model_path` on this machine (about `seconds` of timing each),
    from the cache when it holds this model, CPU type, candidate set and thread count (unless `refresh`)."""
    from vision.digest import file_sha256
    from vision.loading import load_model
    from vision.openvino_session import default_cache_dir

    if not candidates:
        raise ValueError("tune needs at least one candidate runtime")
    model_path = Path(model_path)
    sha = file_sha256(model_path)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_file(folder, sha, candidates, threads)
    if not refresh and path.is_file():
        try:
            saved = json.loads(path.read_text())
            if saved.get("model_sha256") == sha and saved.get("chosen") in map(str, candidates):
                return TuneResult(
                    Runtime.parse(saved["chosen"]), saved["ms_per_frame"], True, path, threads,
                    saved.get("date", ""), saved.get("errors", {}),
                )
        except (OSError, ValueError, KeyError):
            pass  # unreadable: measure again and overwrite
    models, errors = {}, {}
    for runtime in candidates:
        try:
            model = load_model(
                model_path, threads=threads, backend=runtime.backend, device=runtime.device,
                precision=runtime.precision, **load_options,
            )
            model.warmup(2)
            models[str(runtime)] = model
        except Exception as exc:  # a candidate that cannot run here is reported, not fatal
            errors[str(runtime)] = str(exc)
    if not models:
        raise RuntimeError(f"{model_path}: no candidate runtime could run it: {errors}")
    frame = np.random.default_rng(0).integers(0, 256, (*next(iter(models.values())).imgsz, 3), dtype=np.uint8)
    times: dict[str, list[float]] = {name: [] for name in models}
    per_round = seconds / ROUNDS
    for _ in range(ROUNDS):  # interleaved: drift of the host hits every candidate alike
        for name, model in models.items():
            end = time.perf_counter() + per_round
            while True:
                t0 = time.perf_counter()
                model.predict(frame)
                times[name].append((time.perf_counter() - t0) * 1000)
                if t0 >= end:
                    break
    ms = {name: round(statistics.median(t), 3) for name, t in times.items()}
    chosen = min(ms, key=ms.__getitem__)
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record = {
        "model": str(model_path),
        "model_sha256": sha,
        "cpu": cpu_identity(),
        "threads": threads,
        "seconds_each": seconds,
        "candidates": [str(c) for c in candidates],
        "ms_per_frame": ms,
        "errors": errors,
        "chosen": chosen,
        "date": date,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    return TuneResult(Runtime.parse(chosen), ms, False, path, threads, date, errors)
