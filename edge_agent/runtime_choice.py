"""Which runtime a line's model runs on: the line's `model:` choice, held to the accuracy gate, or `auto`.

- `backend: onnxruntime` + `precision: f32` (the default): ONNX Runtime FP32, the reference; no gate.
- any other backend/device/precision: only if the model card holds a passing gate entry for it on this CPU
  type (`vision.runtime_gate`); otherwise the line does not load and `config check` prints the command
  that evaluates it. `force: true` runs it anyway, with a warning in the log.
- `backend: auto`: every runtime this machine can run and the gate allows is timed for a few seconds
  (`vision.tune`, cached per model file and CPU type) and the fastest kept.

Example:
    >>> choice = choose_runtime(Path("models/demo/model.onnx"), backend="onnxruntime")    # doctest: +SKIP
    >>> str(choice.runtime), choice.chosen_by                                              # doctest: +SKIP
    ('onnxruntime:CPU:f32', 'config')
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vision.tune import auto_candidates

log = logging.getLogger(__name__)

TUNE_SECONDS = 2.0


class RuntimeRefused(Exception):
    """The chosen runtime did not pass (or never went through) the accuracy gate."""


@dataclass
class RuntimeChoice:
    runtime: Any  # vision.runtime.Runtime
    chosen_by: str  # config | forced | auto (measured) | auto (cached)
    detail: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        r = self.runtime
        return {
            "runtime": str(r),
            "backend": r.backend,
            "device": r.device,
            "precision": r.precision,
            "chosen_by": self.chosen_by,
            "detail": self.detail,
            "timings_ms": dict(self.timings_ms),
        }


def choose_runtime(
    model_path: Path,
    *,
    backend: str = "onnxruntime",
    device: str = "CPU",
    precision: str = "f32",
    force: bool = False,
    threads: int | None = None,
    cache_dir: Path | None = None,
    tune_seconds: float = TUNE_SECONDS,
) -> RuntimeChoice:
    """The runtime to load `model_path` with; `RuntimeRefused` (the reason and the command that
    evaluates the runtime) when the gate does not allow it and `force` is off."""
    from vision.runtime import REFERENCE, Runtime
    from vision.runtime_gate import check_runtime
    from vision.tune import tune

    if backend != "auto":
        runtime = Runtime(backend, device, precision)
        decision = check_runtime(model_path, runtime)
        if decision.allowed:
            return RuntimeChoice(runtime, "config", decision.reason)
        how = f"; evaluate it with: {decision.command}" if decision.command else ""
        if force:
            log.warning("%s: running %s without the accuracy gate (force: true): %s", model_path, runtime,
                        decision.reason)
            return RuntimeChoice(runtime, "forced", decision.reason)
        raise RuntimeRefused(f"{decision.reason}{how} (or set force: true to run it ungated)")
    candidates = auto_candidates(model_path, device)
    allowed = [r for r in candidates if check_runtime(model_path, r).allowed]
    if allowed == [REFERENCE]:
        return RuntimeChoice(REFERENCE, "auto (only the reference passed the gate)", "")
    result = tune(model_path, allowed, seconds=tune_seconds, threads=threads, cache_dir=cache_dir)
    how = "auto (cached)" if result.from_cache else "auto (measured)"
    log.info("%s: %s\n%s", model_path, how, result.summary())
    return RuntimeChoice(result.chosen, how, f"fastest of {len(allowed)} gated runtimes", result.ms_per_frame)
