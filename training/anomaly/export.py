"""Export a trained anomaly run to ONNX in the anomaly contract (docs/anomaly.md).

Input `input`: float32 NCHW RGB in [0, 1], fixed H x W (dynamic batch); the normalisation is in the graph.
Outputs `pred_score` (N,): the max of the k x k mean of the map (k = the run's `pool`), and `anomaly_map`
(N, 1, H, W): the sigmoid of the network's logits. Metadata: `edge_inspect_kind` = "anomaly",
`image_threshold`, `pixel_threshold`, `imgsz` "[H, W]", `name`, `version`.

Example (needs the `train` extra):
    >>> export_onnx("runs/anomaly/exp", "models/my-line/model.onnx", name="my-line")   # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import onnx

from training.anomaly.train import load_net

OPSET = 17
KIND = "anomaly"


def set_metadata(path: str | Path, values: dict[str, Any]) -> None:
    """Write (or replace) string metadata_props on the ONNX file at `path`."""
    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=str(value)))
    onnx.save(model, str(path))


def export_onnx(
    run: str | Path,
    out_path: str | Path,
    name: str,
    version: str = "1",
    image_threshold: float = 0.5,
    pixel_threshold: float = 0.5,
) -> Path:
    """Write the run's model as the contract's ONNX file; thresholds can be set later (`set_metadata`).
    A network run goes through torch; a statistics run (`training.anomaly.statistics`) is a graph of its
    constants, built without torch."""
    from training.anomaly.statistics import export_statistics_onnx, is_statistics_run

    thresholds = (image_threshold, pixel_threshold)
    if is_statistics_run(run):
        out, scfg = export_statistics_onnx(run, out_path)
        _contract_metadata(out, scfg.imgsz, name, version, thresholds, {"method": "statistics"})
        return out
    import torch

    from training.anomaly.net import ExportWrapper

    net, cfg, _ = load_net(run)
    wrapper = ExportWrapper(net, cfg.pool).eval()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    h, w = cfg.imgsz
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            wrapper,
            (torch.zeros(1, 3, h, w),),
            str(out),
            input_names=["input"],
            output_names=["pred_score", "anomaly_map"],
            dynamic_axes={"input": {0: "batch"}, "pred_score": {0: "batch"}, "anomaly_map": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    _contract_metadata(out, (h, w), name, version, thresholds, {"method": "network", "pool": str(cfg.pool)})
    return out


def _contract_metadata(
    path: Path,
    imgsz: tuple[int, int],
    name: str,
    version: str,
    thresholds: tuple[float, float],
    extra: dict[str, str],
) -> None:
    """The metadata every anomaly export of ours carries (docs/anomaly.md), plus the method's own keys."""
    h, w = imgsz
    values = {
        "edge_inspect_kind": KIND,
        "image_threshold": repr(float(thresholds[0])),
        "pixel_threshold": repr(float(thresholds[1])),
        "imgsz": f"[{h}, {w}]",
        "name": name,
        "version": version,
    }
    set_metadata(path, {**values, **extra})
