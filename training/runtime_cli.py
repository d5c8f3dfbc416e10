"""`edge-inspect model gate|tune|quantize-openvino`: runtimes other than ONNX Runtime FP32 (docs/openvino.md).

- `model quantize-openvino MODEL --calib IMAGES`: OpenVINO's INT8 IR of MODEL, calibrated on the line's
  images (a folder, or a data.yaml and split; default the card's calibration set), written beside it;
- `model gate MODEL --runtime openvino:CPU:bf16`: evaluate a runtime against ONNX Runtime FP32 on the
  card's evaluation split and write the verdict into the card for this CPU type (needs the train extra);
- `model tune MODEL`: time every runtime the gate allows on this machine and cache the fastest (what a
  line with `backend: auto` does at its first start).

Only `gate` needs torch (the evaluation's metrics); `tune` and `quantize-openvino` run on a factory PC.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

CALIB_IMAGES = 64  # as training.export (ONNX Runtime's INT8): a seeded sample of the calibration images
RuntimeOpt = Annotated[str, typer.Option(help="backend:device:precision, e.g. openvino:CPU:bf16.")]


def _images(source: Path, split: str) -> list[Path]:
    """Image files of a folder (recursively) or of a data.yaml's split."""
    from vision.cli import expand_paths

    if source.suffix in (".yaml", ".yml") or (source / "data.yaml").is_file():
        from training.datasets import split_images

        return split_images(source, split)
    return expand_paths([source])


def quantize_openvino_cmd(
    model: Annotated[Path, typer.Argument(help="The .onnx model.")],
    calib: Annotated[
        Path | None, typer.Option(help="The line's images (folder) or a data.yaml; default: the card's.")
    ] = None,
    split: Annotated[str, typer.Option(help="Split of a data.yaml.")] = "train",
    images: Annotated[int, typer.Option(help="How many images (a seeded sample).")] = CALIB_IMAGES,
) -> None:
    """OpenVINO INT8 (NNCF post-training quantisation) of MODEL, calibrated on the line's images, written
    beside it as <stem>.ov-int8.xml/.bin (+ .json: what it was made from). Evaluate it with `model gate`."""
    import numpy as np

    from training.cli_errors import plain_errors as _plain_errors
    from vision import load_model, read_image
    from vision.openvino_session import calibration_tensors, quantize_int8

    with _plain_errors():
        if calib is None:
            card_file = model.parent / "model.json"
            card = json.loads(card_file.read_text()) if card_file.is_file() else {}
            cal = (card.get("dataset") or {}).get("calibration") or {}
            if not cal.get("data") or not Path(cal["data"]).exists():
                raise typer.BadParameter(f"give --calib (the card names none that exists here: {cal or '-'})")
            calib, split = Path(cal["data"]), cal.get("split", split)
        paths = _images(calib, split)
        if not paths:
            raise typer.BadParameter(f"{calib}: no images")
        rng = np.random.default_rng(0)
        pick = sorted(rng.choice(len(paths), min(images, len(paths)), replace=False))
        reference = load_model(model, providers="cpu")
        tensors = calibration_tensors(reference, (read_image(paths[i]) for i in pick))
        ir = quantize_int8(model, tensors, source=f"{calib} ({split})" if calib.suffix else str(calib))
        typer.echo(f"Wrote {ir} (+ .bin, .json), calibrated on {len(tensors)} images of {calib}")
        gate = f"edge-inspect model gate {model} --runtime openvino:CPU:int8"
        typer.echo(f"Evaluate it before a line may use it: {gate}")


def gate_cmd(
    model: Annotated[Path, typer.Argument(help="The .onnx model (its model.json gets the result).")],
    runtime: RuntimeOpt,
    data: Annotated[Path | None, typer.Option(help="Detectors: data.yaml (default: the card's).")] = None,
    split: Annotated[str | None, typer.Option(help="Detectors: split (default: the card's).")] = None,
    eval_good: Annotated[Path | None, typer.Option(help="Anomaly models: folder of good images.")] = None,
    eval_defects: Annotated[Path | None, typer.Option(help="Anomaly models: folder of NG images.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N images (a quick check).")] = None,
) -> None:
    """Evaluate RUNTIME against ONNX Runtime FP32 on the same images; the verdict (≤ 1 pt mAP50 lost, no
    added escape at the operating point) goes into the model card for this CPU type."""
    from training.cli_errors import plain_errors as _plain_errors
    from training.runtime_gate import gate_runtime
    from vision.cli import expand_paths
    from vision.runtime import Runtime

    with _plain_errors():
        try:
            run_on = Runtime.parse(runtime)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        entry = gate_runtime(
            model, run_on, data=data, split=split, limit=limit,
            eval_good=expand_paths([eval_good]) if eval_good else None,
            eval_defects=expand_paths([eval_defects]) if eval_defects else None,
        )
        verdict = "PASSED" if entry["passed"] else "REFUSED"
        typer.echo(f"{run_on}: {verdict}: {entry['reason']}")
        typer.echo(f"  reference {json.dumps(entry['reference'])}")
        typer.echo(f"  candidate {json.dumps(entry['candidate'])}")
        typer.echo(f"  written into {model.parent / 'model.json'} ({entry['seconds']} s)")
        if not entry["passed"]:
            raise typer.Exit(1)


def tune_cmd(
    model: Annotated[Path, typer.Argument(help="The .onnx model.")],
    device: Annotated[str, typer.Option(help="OpenVINO devices to try: CPU, GPU, NPU, AUTO (all).")] = "CPU",
    seconds: Annotated[float, typer.Option(help="Timing per runtime.")] = 2.0,
    threads: Annotated[int | None, typer.Option(help="Inference threads (as the line runs).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Default: ~/.cache/edge-inspect.")] = None,
    refresh: Annotated[bool, typer.Option(help="Time again even if a result is cached.")] = False,
) -> None:
    """Time each runtime the accuracy gate allows for MODEL on this machine; the fastest is cached and is
    what a line with `backend: auto` runs."""
    from training.cli_errors import plain_errors as _plain_errors
    from vision.runtime_gate import check_runtime
    from vision.tune import auto_candidates, tune

    with _plain_errors():
        decisions = [check_runtime(model, r) for r in auto_candidates(model, device)]
        for d in decisions:
            typer.echo(f"  {'allowed' if d.allowed else 'refused'}: {d.runtime}: {d.reason}")
        allowed = [d.runtime for d in decisions if d.allowed]
        result = tune(model, allowed, seconds=seconds, threads=threads, cache_dir=cache_dir, refresh=refresh)
        typer.echo(result.summary())
        typer.echo(f"cached in {result.cache_file}")


def register(app: typer.Typer) -> None:
    """Add the runtime commands to `edge-inspect model` (the group `training.cli` made)."""
    from training.cli import model_app

    model_app.command("quantize-openvino")(quantize_openvino_cmd)
    model_app.command("gate")(gate_cmd)
    model_app.command("tune")(tune_cmd)
