"""`edge-inspect infer`: run a model on images and print what it finds."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def _parse_tile(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    try:
        rows, cols = (int(v) for v in value.lower().split("x"))
    except ValueError as exc:
        raise typer.BadParameter(f"--tile must look like 2x3 (rows x cols), got {value!r}") from exc
    return rows, cols


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files as given; folders expanded to the images inside them (sorted)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out


def infer(
    model: Annotated[Path, typer.Argument(help="ONNX model file (Ultralytics export).")],
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    conf: Annotated[float, typer.Option(help="Minimum confidence.")] = 0.25,
    iou: Annotated[float, typer.Option(help="NMS IoU threshold.")] = 0.7,
    imgsz: Annotated[int | None, typer.Option(help="Input size for models without metadata.")] = None,
    tile: Annotated[str | None, typer.Option(help="Tile grid ROWSxCOLS for small defects, e.g. 2x2.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per image on stdout.")] = False,
    save: Annotated[Path | None, typer.Option(help="Folder for annotated images.")] = None,
    providers: Annotated[str, typer.Option(help="auto, cpu, cuda, tensorrt, openvino.")] = "auto",
    runtime: Annotated[
        str, typer.Option(help="backend:device:precision, e.g. onnxruntime:CPU:int8, openvino:GPU:f32.")
    ] = "onnxruntime:CPU:f32",
    names: Annotated[
        str | None, typer.Option(help="Comma-separated class names, for models without metadata.")
    ] = None,
) -> None:
    """Run MODEL on each image; a bad image is reported and the rest go on. Exit 1 if any failed."""
    import cv2

    from vision.draw import annotate, heat_overlay
    from vision.errors import VisionError
    from vision.images import read_image
    from vision.loading import load_model
    from vision.runtime import Runtime

    grid = _parse_tile(tile)
    try:
        run_on = Runtime.parse(runtime)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--runtime") from exc
    try:  # any kind: detect, segment, classify or anomaly (its thresholds come with the model)
        m = load_model(
            model,
            providers=providers,
            backend=run_on.backend,
            device=run_on.device,
            precision=run_on.precision,
            imgsz=imgsz,
            names=names.split(",") if names else None,
            conf=conf,
            iou=iou,
        )
    except VisionError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if save:
        save.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in expand_paths(paths):
        try:
            image = read_image(path)
            pred = m.predict(image, tile=grid)
        except (VisionError, ValueError) as exc:
            failures += 1
            if json_out:
                print(json.dumps({"path": str(path), "error": str(exc)}), flush=True)
            else:  # image errors already name the file: say it once
                message = str(exc)
                typer.echo(message if str(path) in message else f"{path}: {message}", err=True)
            continue
        h, w = pred.shape
        record: dict[str, Any] = {
            "path": str(path),
            "width": w,
            "height": h,
            "detections": pred.detections.to_records(),
            "timing_ms": {k: round(v, 3) for k, v in pred.timing_ms.items()},
        }
        if pred.probs is not None:
            record["probs"] = {m.names[i]: round(float(p), 5) for i, p in enumerate(pred.probs)}
            record["top1"] = m.names[pred.top1 or 0]
        base = image
        if pred.anomaly is not None:
            a = pred.anomaly
            record["anomaly"] = {
                "score": round(a.score, 6),
                "image_threshold": a.image_threshold,
                "pixel_threshold": a.pixel_threshold,
                "anomalous": a.anomalous,
            }
            base = heat_overlay(image, a.map, a.pixel_threshold) if save else image
        if save:
            out = save / f"{path.stem}.jpg"
            cv2.imwrite(str(out), annotate(base, pred.detections))
            record["saved"] = str(out)
        if json_out:
            print(json.dumps(record), flush=True)
        else:
            _print_table(record)
    if failures:
        raise typer.Exit(1)


def _print_table(record: dict[str, Any]) -> None:
    t = record["timing_ms"]
    dets = record["detections"]
    head = f"{record['path']}  {record['width']}x{record['height']}  "
    head += (
        f"{len(dets)} detection(s)  [pre {t['preprocess']:.1f} / inf {t['inference']:.1f}"
        f" / post {t['postprocess']:.1f} ms]"
    )
    if "top1" in record:
        head += f"  top1: {record['top1']} ({record['probs'][record['top1']]:.3f})"
    if "anomaly" in record:
        a = record["anomaly"]
        verdict = "NG" if a["anomalous"] else "OK"
        head += f"  anomaly {a['score']:.4g} ({verdict} from {a['image_threshold']:.4g})"
    print(head)
    for d in dets:
        x1, y1, x2, y2 = d["xyxy"]
        print(f"    {d['class']:<16} {d['confidence']:.3f}  [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]")
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("infer")(infer)
