"""`load_model`: any model file, opened as the model kind it is (detector/segmenter/classifier or anomaly)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vision.anomaly import ANOMALY_ONLY_OPTIONS, AnomalyModel, is_anomaly_session
from vision.errors import ModelLoadError
from vision.model import Model
from vision.session import SESSION_OPTIONS, open_session, runtime_of


def load_model(path: str | Path, **options: Any) -> Model | AnomalyModel:
    """The one way to load any model kind: a detector/segmenter/classifier as `Model`, an anomaly model
    (ours, or an anomalib export: outputs `pred_score` + `anomaly_map`) as `vision.anomaly.AnomalyModel`.

    `options` are those of the chosen class. `conf`, `iou`, `max_det` are ignored for an anomaly model (its
    thresholds do that job); anomaly-only options (`image_threshold`, `pixel_threshold`, `min_region_area`)
    given for another kind are an error, as `names` for an anomaly model. `backend`, `device`, `precision`
    and `cache_dir` choose the runtime for every kind (`open_session`; the model's `runtime` says which).

    >>> load_model("models/demo/model.onnx", providers="cpu").task    # doctest: +SKIP
    'detect'
    >>> load_model("models/demo/model.onnx", backend="openvino", precision="bf16").runtime  # doctest: +SKIP
    Runtime(backend='openvino', device='CPU', precision='bf16')
    """
    path = Path(path)
    session = open_session(path, **{k: options.pop(k) for k in SESSION_OPTIONS if k in options})
    runtime = runtime_of(session)
    task = options.pop("task", None)
    if task == "anomaly" or (task is None and is_anomaly_session(session)):
        if options.pop("names", None) is not None:
            raise ModelLoadError(f"{path}: names= does not apply to an anomaly model (one class, 'anomaly')")
        for key in ("conf", "iou", "max_det"):  # detection thresholds: the anomaly thresholds do that job
            options.pop(key, None)
        anomaly = AnomalyModel(path, session=session, **options)
        anomaly.runtime = runtime  # type: ignore[attr-defined]
        return anomaly
    for key in ANOMALY_ONLY_OPTIONS:
        if options.pop(key, None) is not None:
            raise ModelLoadError(f"{path}: {key}= applies to anomaly models only; this one is not")
    return Model(path, session=session, task=task, **options)
