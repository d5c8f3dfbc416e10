"""Choosing ONNX Runtime execution providers and session options.

`providers="auto"` picks the best installed provider (TensorRT > CUDA > OpenVINO > CPU) and logs the
choice; a provider asked for by name that is not installed is a clear error, not a silent CPU fallback.

Example:
    >>> resolve_providers("cpu")
    ['CPUExecutionProvider']
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import onnxruntime as ort

from vision.errors import ModelLoadError

log = logging.getLogger(__name__)

ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
PREFERENCE = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "OpenVINOExecutionProvider",
    "CPUExecutionProvider",
)
Optimization = Literal["disable", "basic", "extended", "all"]
_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def resolve_providers(providers: str | Sequence[str] = "auto") -> list[str]:
    """Turn "auto", an alias ("cuda") or a list of names into ORT provider names, CPU always last."""
    available = ort.get_available_providers()
    if isinstance(providers, str) and providers == "auto":
        chosen = [p for p in PREFERENCE if p in available]
    else:
        names = [providers] if isinstance(providers, str) else list(providers)
        chosen = []
        for name in names:
            full = ALIASES.get(name.lower(), name)
            if full not in available:
                raise ModelLoadError(
                    f"execution provider {name!r} is not installed here (available: {', '.join(available)})"
                )
            chosen.append(full)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def physical_cores() -> int:
    try:
        import psutil

        return psutil.cpu_count(logical=False) or 1
    except Exception:  # psutil missing or unsupported platform
        import os

        return os.cpu_count() or 1


def session_options(
    threads: int | None = None, optimization: Optimization = "all", spinning: bool = True
) -> ort.SessionOptions:
    """Defaults measured fastest here: intra-op threads = physical cores, every graph optimisation.

    `spinning=False` stops idle intra-op threads from busy-waiting after each run: one model alone is a
    little faster with spinning, but several models taking turns on the same cores lose to it.
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or physical_cores()
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = _LEVELS[optimization]
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return opts
