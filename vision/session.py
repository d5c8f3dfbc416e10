"""Opening a model file as a runtime session: ONNX Runtime (default) or OpenVINO, with our options.

Every model kind (`vision.model.Model`, `vision.anomaly.AnomalyModel`) opens its session here, so the
choice of runtime lives in one place and the model modules do not import each other.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnxruntime as ort

from vision.errors import ModelLoadError
from vision.providers import Optimization, resolve_providers, session_options
from vision.runtime import Runtime, ort_int8_path

if TYPE_CHECKING:
    from vision.openvino_session import OpenVINOSession

log = logging.getLogger(__name__)

#: `load_model` / `Model` options that choose and configure the session (the rest configure the model)
SESSION_OPTIONS = (
    "providers", "threads", "optimization", "spinning", "backend", "device", "precision", "cache_dir"
)


def open_session(
    path: Path,
    providers: str | Sequence[str] = "auto",
    threads: int | None = None,
    optimization: Optimization = "all",
    spinning: bool = True,
    *,
    backend: str = "onnxruntime",
    device: str = "CPU",
    precision: str = "f32",
    cache_dir: str | Path | bool | None = None,
) -> ort.InferenceSession | OpenVINOSession:
    """A session on `path` with our options; `ModelLoadError` naming the file.

    `backend="onnxruntime"` (default): an ONNX Runtime session with `providers`; `precision="int8"` opens
    the INT8 file beside it (`<stem>.int8.onnx`). `backend="openvino"`: the same file compiled by OpenVINO
    for `device` at `precision` (`vision.openvino_session`; `providers`, `optimization` and `spinning` do
    not apply), with its compiled-model cache in `cache_dir`.
    """
    try:
        runtime = Runtime(backend, device, precision)
    except ValueError as exc:
        raise ModelLoadError(f"{path}: {exc}") from exc
    if runtime.backend == "openvino":
        from vision.openvino_session import OpenVINOSession

        return OpenVINOSession(path, device=device, precision=precision, threads=threads, cache_dir=cache_dir)
    if runtime.precision == "int8":
        int8 = ort_int8_path(path)
        if not int8.is_file():
            raise ModelLoadError(
                f"{path}: no ONNX Runtime INT8 file ({int8.name}); "
                "export one with `edge-inspect export --int8`"
            )
        path = int8
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such model file")
    chosen = resolve_providers(providers)
    options = session_options(threads, optimization, spinning)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    except Exception as exc:  # ORT raises several types for corrupt/truncated/invalid graphs
        raise ModelLoadError(f"{path}: not a loadable ONNX model ({exc})") from exc
    running = session.get_providers()
    if running[0] != chosen[0]:
        log.warning("%s: %s could not start; running on %s", path, chosen[0], running[0])
    log.info("%s: execution providers %s", path.name, running)
    return session


def runtime_of(session: Any) -> Runtime:
    """The `Runtime` an opened session runs (an OpenVINO session knows it; ORT: CPU f32, or int8 when it
    was opened on the INT8 file)."""
    from vision.openvino_session import OpenVINOSession

    if isinstance(session, OpenVINOSession):
        return Runtime("openvino", session.device, session.precision)
    path = str(getattr(session, "_model_path", "") or "")
    return Runtime("onnxruntime", "CPU", "int8" if path.endswith(".int8.onnx") else "f32")
