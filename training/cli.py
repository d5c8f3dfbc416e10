"""Training commands: `dataset import|split|stats|synth|export|from-archive`, `train`, `evaluate`, `export`,
`model list|show|promote`.

Every command checks its input first and says in plain words what is wrong (exit code 2); torch and
Ultralytics are imported only inside the commands that need them, so `edge-inspect --help` stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from training.cli_errors import plain_errors as _plain_errors

dataset_app = typer.Typer(
    help="Import, split, inspect and synthesise labelled image datasets.", no_args_is_help=True
)
model_app = typer.Typer(
    help="The model registry (models/): list, show, promote to a line.", no_args_is_help=True
)


# ------------------------------------------------------------------------------------------ dataset
@dataset_app.command("import")
def dataset_import(
    src: Annotated[
        Path,
        typer.Argument(
            help="Source: VOC folder, COCO .json, YOLO folder, Label Studio .json, CVAT annotations.xml."
        ),
    ],
    dst: Annotated[Path, typer.Argument(help="Destination folder for the canonical dataset.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="voc, coco, yolo, label-studio or cvat.")],
    classes: Annotated[
        str | None, typer.Option(help="Comma-separated class list (fixes names and order).")
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(help="COCO, Label Studio, CVAT: folder the images are in (default: beside the file)."),
    ] = None,
    val: Annotated[float | None, typer.Option(help="Also split: validation fraction.")] = None,
    test: Annotated[float, typer.Option(help="Test fraction (with --val).")] = 0.0,
    seed: Annotated[int, typer.Option(help="Split seed (with --val).")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty destination.")] = False,
) -> None:
    """Convert a labelled dataset into the checked Ultralytics layout, with a report of every problem."""
    from training.datasets import import_dataset, split_dataset

    with _plain_errors():
        class_list = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
        report = import_dataset(
            src,
            dst,
            fmt=fmt.lower(),
            classes=class_list,
            images_dir=images,  # type: ignore[arg-type]
            overwrite=overwrite,
        )
        typer.echo(report.to_text())
        typer.echo(f"Report: {dst / 'import_report.txt'} and import_report.json")
        if val is not None:
            _print_split(split_dataset(dst, val=val, test=test, seed=seed))


def _print_split(result: Any) -> None:
    typer.echo("Split: " + ", ".join(f"{k} {v} images" for k, v in result.counts.items()))
    for split, per_class in result.class_images.items():
        typer.echo(f"  {split:<6}" + "  ".join(f"{k}: {v}" for k, v in per_class.items()))
    for w in result.warnings:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"Wrote {result.data_yaml}")


@dataset_app.command("split")
def dataset_split(
    data: Annotated[Path, typer.Argument(help="Imported dataset folder (or its data.yaml).")],
    val: Annotated[float, typer.Option(help="Validation fraction.")] = 0.2,
    test: Annotated[float, typer.Option(help="Test fraction.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed: same files + same seed = same split.")] = 0,
) -> None:
    """Deterministic split, stratified so each class appears in each part."""
    from training.datasets import split_dataset

    with _plain_errors():
        _print_split(split_dataset(data, val=val, test=test, seed=seed))


@dataset_app.command("validate")
def dataset_validate(
    data: Annotated[Path, typer.Argument(help="Dataset folder or data.yaml.")],
) -> None:
    """Check a dataset as training reads it: images decode, labels are valid boxes of known classes,
    val is not train. Exit 1 on errors."""
    from training.datasets import validate_dataset

    with _plain_errors():
        report = validate_dataset(data)
        typer.echo(report.to_text())
        if report.errors:
            raise typer.Exit(1)


@dataset_app.command("stats")
def dataset_stats_cmd(
    data: Annotated[Path, typer.Argument(help="Dataset folder or data.yaml.")],
    plot: Annotated[Path | None, typer.Option(help="PNG to write (default: DATA/stats.png).")] = None,
) -> None:
    """Images and boxes per class per split, and box sizes; printed and saved as a PNG plot."""
    from training.datasets import load_data_yaml
    from training.stats import dataset_stats, plot_stats

    with _plain_errors():
        stats = dataset_stats(data)
        typer.echo(stats.to_text())
        out = plot or load_data_yaml(data)[0].parent / "stats.png"
        typer.echo(f"Plot: {plot_stats(stats, out)}")


@dataset_app.command("synth")
def dataset_synth(
    dst: Annotated[Path, typer.Argument(help="Destination folder (Ultralytics layout + data.yaml).")],
    n: Annotated[int, typer.Option("--n", help="Number of images.")] = 200,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 320,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    val: Annotated[float, typer.Option(help="Validation fraction.")] = 0.2,
    ok_fraction: Annotated[float, typer.Option(help="Fraction of defect-free parts.")] = 0.25,
) -> None:
    """Synthetic textured surfaces with scratches, pits, cracks and stains (exact boxes)."""
    from training.synth import CLASSES, write_dataset

    if n < 1 or size < 16 or not 0 <= val < 1 or not 0 <= ok_fraction <= 1:
        typer.echo("error: need --n >= 1, --size >= 16, 0 <= --val < 1, 0 <= --ok-fraction <= 1", err=True)
        raise typer.Exit(2)
    data_yaml = write_dataset(
        dst, n=n, size=(size, size), seed=seed, val_fraction=val, ok_probability=ok_fraction
    )
    typer.echo(f"Wrote {n} images ({', '.join(CLASSES)}) and {data_yaml}")


@dataset_app.command("export")
def dataset_export(
    src: Annotated[Path, typer.Argument(help="Dataset (folder with data.yaml) or a plain folder of images.")],
    dst: Annotated[Path, typer.Argument(help="Folder for the labelling batch (images + the tool's file).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="label-studio or cvat.")],
    split: Annotated[str, typer.Option(help="Dataset split: all, train, val or test.")] = "all",
    model: Annotated[Path | None, typer.Option(help="ONNX model whose boxes become pre-annotations.")] = None,
    conf: Annotated[float, typer.Option(help="Pre-annotation confidence threshold.")] = 0.25,
    url_prefix: Annotated[
        str | None, typer.Option(help="Label Studio: image URL prefix (default: local files, images/).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty destination.")] = False,
) -> None:
    """Write images + a Label Studio task list or a CVAT for images 1.1 XML, with the dataset's labels
    and/or a model's boxes as pre-annotations, ready to import into the labelling tool."""
    from training.formats.batch import add_predictions, dataset_sources, folder_sources, write_batch

    with _plain_errors():
        if (src / "data.yaml").is_file() or src.suffix in (".yaml", ".yml"):
            sources, classes = dataset_sources(src, split)
        else:
            sources, classes = folder_sources(src), []
        if model is not None:
            model_classes = add_predictions(sources, model, conf=conf)
            classes = classes or model_classes
        if not classes:
            typer.echo("error: a folder of images needs --model (for the classes and boxes)", err=True)
            raise typer.Exit(2)
        out = write_batch(
            sources, dst, fmt.lower(), classes, url_prefix, str(model) if model else None, overwrite
        )
        typer.echo(f"Wrote {len(sources)} images and {out}")


@dataset_app.command("from-archive")
def dataset_from_archive(
    archive: Annotated[Path, typer.Argument(help="The agent's capture folder (site file: capture.path).")],
    dst: Annotated[Path, typer.Argument(help="Folder for the labelling batch.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="label-studio or cvat.")] = "label-studio",
    reason: Annotated[
        str | None, typer.Option(help="Only parts captured for this reason: uncertain or review.")
    ] = None,
    line: Annotated[str | None, typer.Option(help="Only this line's parts.")] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="Re-run this ONNX model for the pre-annotations (default: boxes at capture)."),
    ] = None,
    conf: Annotated[float, typer.Option(help="Confidence threshold with --model.")] = 0.1,
    url_prefix: Annotated[str | None, typer.Option(help="Label Studio: image URL prefix.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty destination.")] = False,
) -> None:
    """Turn captured frames (uncertain or reviewer-marked parts) into a labelling batch with
    pre-annotations; label them, then `dataset import --format label-studio|cvat` brings them back."""
    from training.formats.batch import add_predictions, capture_sources, write_batch

    with _plain_errors():
        sources, classes = capture_sources(archive, [reason] if reason else None, line)
        if not sources:
            typer.echo("error: no captured images match (wrong --reason or --line?)", err=True)
            raise typer.Exit(2)
        if model is not None:
            classes = add_predictions(sources, model, conf=conf)
        out = write_batch(
            sources, dst, fmt.lower(), classes, url_prefix, str(model) if model else None, overwrite
        )
        typer.echo(f"Wrote {len(sources)} images and {out}")


# ------------------------------------------------------------------------------------------ train etc.
def train_cmd(
    data: Annotated[Path, typer.Argument(help="Dataset folder or data.yaml.")],
    model: Annotated[
        str, typer.Option(help="yolov8n.yaml, yolo11n.yaml, yolo26n.yaml or PATH.pt.")
    ] = "yolov8n.yaml",
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 100,
    imgsz: Annotated[int, typer.Option(help="Training image size (multiple of 32).")] = 320,
    batch: Annotated[int, typer.Option(help="Batch size.")] = 16,
    device: Annotated[str, typer.Option(help="cpu, 0 (first GPU), 0,1 ...")] = "cpu",
    hours: Annotated[float | None, typer.Option(help="Wall-time budget; overrides --epochs.")] = None,
    project: Annotated[Path, typer.Option(help="Folder for run folders.")] = Path("runs/train"),
    name: Annotated[str, typer.Option(help="Run name (a number is added if it exists).")] = "exp",
    workers: Annotated[int | None, typer.Option(help="Data-loader workers (default 0 on CPU).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run whose last.pt is given as --model.")] = False,
) -> None:
    """Train a detector offline (Ultralytics); progress is printed, checkpoints saved every epoch."""
    import os

    from training.train import train

    os.environ.setdefault("YOLO_VERBOSE", "True")  # show the per-epoch progress bars
    with _plain_errors():
        if not resume:
            from training.datasets import train_val_overlap
            from training.train import check_data_yaml

            overlap, n_val = train_val_overlap(check_data_yaml(data))
            if overlap:
                typer.secho(
                    f"WARNING: {overlap} of the {n_val} validation images are training images: the "
                    f"metrics will not say how the model does on new parts. Split first: "
                    f"edge-inspect dataset split {data if Path(data).is_dir() else Path(data).parent}",
                    fg=typer.colors.RED,
                    bold=True,
                    err=True,
                )
        run = train(
            data,
            model=model,
            epochs=epochs,
            imgsz=imgsz,
            batch=batch,
            device=device,
            project=project,
            name=name,
            resume=resume,
            hours=hours,
            workers=workers,
        )
        typer.echo(f"Run folder: {run} (export with `edge-inspect export {run}`)")


def evaluate_cmd(
    model: Annotated[Path, typer.Argument(help="Exported .onnx model.")],
    data: Annotated[Path, typer.Argument(help="Dataset folder or data.yaml.")],
    split: Annotated[str, typer.Option(help="train, val or test.")] = "val",
    conf: Annotated[float, typer.Option(help="Decision confidence for escape / false-reject rates.")] = 0.25,
    target_escape: Annotated[float, typer.Option(help="Target image escape rate (0.01 = 1%).")] = 0.01,
    out: Annotated[Path | None, typer.Option(help="Folder for evaluation.json and the plots.")] = None,
    providers: Annotated[str, typer.Option(help="ONNX Runtime providers: cpu, cuda, auto...")] = "cpu",
    json_out: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
    runtime: Annotated[
        str, typer.Option(help="backend:device:precision, e.g. openvino:CPU:bf16 (gate it: `model gate`).")
    ] = "onnxruntime:CPU:f32",
) -> None:
    """Run the ONNX model through the edge runtime over a split: mAP, per class, escape/false-reject."""
    from training.evaluate import evaluate

    with _plain_errors():
        out_dir = out or model.parent / "eval" / f"{model.stem}-{split}"
        report = evaluate(
            model,
            data,
            split=split,
            decision_conf=conf,
            target_escape_rate=target_escape,
            out_dir=out_dir,
            providers=providers,
            runtime=runtime,
        )
        typer.echo(json.dumps(report.to_dict(), indent=2) if json_out else report.summary())
        typer.echo(f"Plots and JSON: {out_dir}", err=json_out)


def export_cmd(
    run: Annotated[Path, typer.Argument(help="Training run folder (or a .pt checkpoint).")],
    out: Annotated[Path, typer.Option(help="Model folder to write (e.g. models/my-line).")],
    imgsz: Annotated[int, typer.Option(help="Model input size.")] = 320,
    data: Annotated[
        Path | None, typer.Option(help="Evaluation dataset (default: the training data).")
    ] = None,
    split: Annotated[str, typer.Option(help="Evaluation split.")] = "val",
    int8: Annotated[bool, typer.Option(help="Also write an INT8 model (static quantization).")] = False,
    calib: Annotated[Path | None, typer.Option(help="Dataset for INT8 calibration (train split).")] = None,
    description: Annotated[str, typer.Option(help="One line for the model card.")] = "",
    citation: Annotated[str, typer.Option(help="Dataset citation / licence for the card.")] = "",
) -> None:
    """Export to ONNX, evaluate it with the edge runtime and write the model card model.json."""
    from training.export import export_run

    with _plain_errors():
        card = export_run(
            run,
            out,
            imgsz=imgsz,
            eval_data=data,
            eval_split=split,
            int8=int8,
            calib_data=calib,
            description=description,
            dataset_citation=citation,
        )
        typer.echo(f"Wrote {card.parent / 'model.onnx'} and {card}")


# ------------------------------------------------------------------------------------------ registry
@model_app.command("list")
def model_list(registry: Annotated[Path, typer.Option(help="Registry folder.")] = Path("models")) -> None:
    """One line per model in the registry."""
    from training.registry import list_models

    with _plain_errors():
        models = list_models(registry)
        if not models:
            typer.echo(f"no models in {registry}")
        for m in models:
            typer.echo(m.summary())


@model_app.command("show")
def model_show(
    model: Annotated[str, typer.Argument(help="Registry name, model folder or .onnx path.")],
    registry: Annotated[Path, typer.Option(help="Registry folder.")] = Path("models"),
    as_json: Annotated[bool, typer.Option("--json", help="The whole model card as JSON.")] = False,
) -> None:
    """A model's card in a few lines: classes, input, files, metrics, data, training (--json: all of it)."""
    from training.registry import resolve_model

    with _plain_errors():
        card = resolve_model(model, registry).card
        typer.echo(json.dumps(card, indent=2) if as_json else card_summary(card))


def card_summary(card: dict[str, Any]) -> str:
    """The model card's essentials, one topic per line (the full card: `model show --json`)."""

    def num(value: Any, digits: int = 3) -> str:
        return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"

    classes = card.get("classes") or {}
    names = classes.values() if isinstance(classes, dict) else classes
    inp = card.get("input") or {}
    lines = [
        f"{card.get('name', '?')}: {card.get('description', '')}".rstrip(": "),
        f"  task {card.get('task', '?')}; classes: {', '.join(map(str, names))}",
        f"  input {inp.get('imgsz')} ({'dynamic' if inp.get('dynamic_batch') else 'fixed'} batch)",
    ]
    for variant, info in (card.get("files") or {}).items():
        size = info.get("bytes")
        mb = f"{size / 1e6:.1f} MB" if isinstance(size, (int, float)) else "?"
        lines.append(f"  {variant}: {info.get('file')} ({mb}, sha256 {str(info.get('sha256', ''))[:12]})")
    for variant, m in (card.get("metrics") or {}).items():
        if not isinstance(m, dict):
            continue
        if card.get("task") == "anomaly":
            curve = m.get("escape_at_false_reject") or {}
            lines.append(
                f"  {variant} on {m.get('data', '?')}: image AUROC {num(m.get('image_auroc'))}, pixel AUROC "
                f"{num(m.get('pixel_auroc'))}, AUPRO {num(m.get('aupro'))}; escape at false reject "
                + ", ".join(f"{100 * float(k):g}%: {num(v.get('escape_rate'))}" for k, v in curve.items())
                + f"; {num(m.get('ms_per_image'), 1)} ms/image"
            )
            continue
        lines.append(
            f"  {variant} on {m.get('split', '?')} ({m.get('images', '?')} images): "
            f"mAP50 {num(m.get('map50'))}, "
            f"mAP50-95 {num(m.get('map50_95'))}, escape rate {num(m.get('escape_rate'))} / false rejects "
            f"{num(m.get('false_reject_rate'))} at conf {num(m.get('decision_conf'), 2)}, "
            f"{num(m.get('ms_per_image'), 1)} ms/image"
        )
    point = card.get("operating_point") or {}
    if card.get("task") == "anomaly" and point:
        lines.append(
            f"  operating point for false reject <= {num(point.get('target_false_reject_rate'))} "
            f"({point.get('held_out_good')} held-out good parts): image threshold "
            f"{num(point.get('image_threshold'), 4)}; escape {num(point.get('escape_rate'))} / false rejects "
            f"{num(point.get('false_reject_rate'))} on the evaluation set"
        )
    if point.get("thresholds"):
        thr = ", ".join(f"{k} {num(v)}" for k, v in point["thresholds"].items())
        lines.append(
            f"  operating point for escape <= {num(point.get('target_escape_rate'), 3)}: {thr}; escape "
            f"{num(point.get('escape_rate'))} / false rejects {num(point.get('false_reject_rate'))}"
        )
    data = card.get("dataset") or {}
    training = card.get("training") or {}
    if card.get("task") == "anomaly":
        cfg = training.get("config") or {}
        kinds = cfg.get("defects") or ["(default kinds)"]
        lines.append(f"  trained on good images in {data.get('good', '?')}; eval {data.get('eval_source')}")
        lines.append(
            f"  training: {training.get('steps', '?')} steps ({num(training.get('train_hours'), 2)} h, "
            f"{num(training.get('cpu_hours'), 2)} CPU-h) with synthetic {', '.join(map(str, kinds))}"
        )
        data, training = {}, {}
    if data:
        lines.append(
            f"  data: {data.get('citation') or data.get('data_yaml') or '?'}; eval split "
            f"{data.get('eval_split', '?')}; content sha256 {str(data.get('content_sha256', ''))[:12]}"
        )
    if training:
        args = training.get("args") or {}
        lines.append(
            f"  training: {training.get('epochs_completed', '?')} epochs "
            f"({num(training.get('train_hours'), 2)} h) "
            f"of {args.get('model', '?')} at {args.get('imgsz', '?')} px"
        )
    promotions = card.get("promotions") or []
    lines.append(f"  created {card.get('created', '?')}; promoted {len(promotions)} time(s)")
    lines.append("  (everything: edge-inspect model show NAME --json)")
    return "\n".join(lines)


@model_app.command("promote")
def model_promote(
    model: Annotated[str, typer.Argument(help="Registry name, model folder or .onnx path.")],
    line: Annotated[Path, typer.Option(help="Line file, e.g. configs/lines/line1.yaml.")],
    registry: Annotated[Path, typer.Option(help="Registry folder.")] = Path("models"),
    data: Annotated[
        Path | None, typer.Option(help="Evaluation set for the comparison (default: card's).")
    ] = None,
    split: Annotated[str | None, typer.Option(help="Evaluation split (default: card's).")] = None,
    recipe: Annotated[
        str | None, typer.Option(help="Recipe that gets the thresholds (default: the active one).")
    ] = None,
    thresholds: Annotated[
        bool, typer.Option(help="Write the operating point's per-class thresholds into the recipe.")
    ] = True,
    force: Annotated[
        bool, typer.Option(help="Promote even if worse than the current model, or without a gate.")
    ] = False,
    reason: Annotated[str, typer.Option(help="Why (recorded in the card, needed with --force).")] = "",
) -> None:
    """Put MODEL on a line: refused if its classes do not fit the line's rules, if it is worse than the
    current model at the operating point (escape, false reject) or in mAP50, or if that cannot be checked."""
    from training.registry import promote

    if force and not reason:
        typer.echo("error: --force needs --reason (it is recorded in the model card)", err=True)
        raise typer.Exit(2)
    with _plain_errors():
        result = promote(
            model,
            line,
            registry=registry,
            data=data,
            split=split,
            force=force,
            reason=reason,
            recipe=recipe,
            write_thresholds=thresholds,
        )
        if result.gate is not None:
            typer.echo(result.gate.summary())
        typer.echo(result.diff or "(line file unchanged)")
        typer.echo(result.message)


def register(app: typer.Typer) -> None:
    """Add the training commands to the root `edge-inspect` app."""
    app.add_typer(dataset_app, name="dataset")
    commands: dict[str, Callable[..., None]] = {
        "train": train_cmd,
        "evaluate": evaluate_cmd,
        "export": export_cmd,
    }
    for name, fn in commands.items():
        app.command(name)(fn)
    app.add_typer(model_app, name="model")
    from training.anomaly.cli import anomaly_app

    app.add_typer(anomaly_app, name="anomaly")
