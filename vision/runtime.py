"""Which runtime runs a model: backend, device and precision (`Runtime`), and this machine's CPU identity.

A `Runtime` is the pair the accuracy gate and the tuner speak of, written `backend:device:precision`:

- `onnxruntime:CPU:f32`  the ONNX file as exported (the reference every other pair is compared with);
- `onnxruntime:CPU:int8` ONNX Runtime's static INT8 file beside it (`<stem>.int8.onnx`, `edge-inspect
  export --int8`);
- `openvino:<device>:f32|bf16|int8` the same ONNX file run by OpenVINO (`vision.openvino_session`), INT8
  from OpenVINO's own quantisation (`<stem>.ov-int8.xml`).

Example:
    >>> Runtime.parse("openvino:cpu:bf16")
    Runtime(backend='openvino', device='CPU', precision='bf16')
    >>> str(Runtime())
    'onnxruntime:CPU:f32'
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

BACKENDS = ("onnxruntime", "openvino")
PRECISIONS = ("f32", "bf16", "int8")
# CPU flags that change what a precision computes or how fast (the gate's "CPU type" is name + these)
RELEVANT_FLAGS = (
    "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "avx_vnni", "amx_bf16", "amx_int8", "amx_tile", "sse4_2",
)


@dataclass(frozen=True)
class Runtime:
    backend: str = "onnxruntime"
    device: str = "CPU"
    precision: str = "f32"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} unknown (one of {', '.join(BACKENDS)})")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} unknown (one of {', '.join(PRECISIONS)})")
        if self.backend == "onnxruntime" and self.precision == "bf16":
            raise ValueError("onnxruntime runs f32 or int8 (bf16 is an OpenVINO precision)")
        object.__setattr__(self, "device", self.device.upper())

    def __str__(self) -> str:
        return f"{self.backend}:{self.device}:{self.precision}"

    @classmethod
    def parse(cls, text: str) -> Runtime:
        """`backend[:device[:precision]]`, e.g. `openvino:GPU:f32`, `onnxruntime:CPU:int8`, `openvino`."""
        parts = [p.strip() for p in text.split(":")]
        if not 1 <= len(parts) <= 3 or not parts[0]:
            raise ValueError(f"{text!r}: a runtime is backend:device:precision, e.g. openvino:CPU:bf16")
        backend = parts[0].lower()
        device = parts[1] if len(parts) > 1 and parts[1] else "CPU"
        precision = parts[2].lower() if len(parts) > 2 and parts[2] else "f32"
        return cls(backend, device, precision)

    @property
    def is_reference(self) -> bool:
        return self == REFERENCE

    def on_cpu(self) -> bool:
        return self.device in ("CPU",)


REFERENCE = Runtime()


def ort_int8_path(onnx_path: str | Path) -> Path:
    """`models/x/model.onnx` -> `models/x/model.int8.onnx` (what `edge-inspect export --int8` writes)."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.stem + ".int8.onnx")


def _cpuinfo() -> tuple[str, set[str]]:
    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not name:
                name = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:  # not Linux
        pass
    return name or platform.processor() or platform.machine(), flags


@lru_cache(maxsize=1)
def cpu_identity() -> dict[str, object]:
    """This machine's CPU type: model name, the flags that matter for f32/bf16/int8 kernels, and a short
    key made of both (`AMD EPYC|3f9c…`) under which gate results and tuning are kept.

    >>> sorted(cpu_identity())
    ['flags', 'key', 'name']
    """
    name, flags = _cpuinfo()
    relevant = sorted(f for f in RELEVANT_FLAGS if f in flags)
    digest = hashlib.sha256(" ".join(relevant).encode()).hexdigest()[:10]
    return {"name": name, "flags": relevant, "key": f"{name}|{digest}"}


def all_cpu_flags() -> list[str]:
    """Every flag the CPU reports (for benchmark headers)."""
    return sorted(_cpuinfo()[1])
