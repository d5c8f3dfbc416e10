"""`edge-inspect anomaly train|evaluate|export`: anomaly models from good parts only.

    edge-inspect anomaly train GOOD_DIR --out models/my-line --defects crack,pit --hours 0.5 \\
        --eval-defects reviewed_ng/ [--eval-good held_good/]
    edge-inspect anomaly train --resume --run runs/anomaly/my-line --out models/my-line
    edge-inspect anomaly evaluate models/my-line/model.onnx --eval MVTEC_ROOT

torch is imported only inside the commands that train or export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

anomaly_app = typer.Typer(
    help="Anomaly models trained on good parts only: train, evaluate, export.", no_args_is_help=True
)

EvalOpt = Annotated[
    Path | None,
    typer.Option(
        "--eval",
        help="Evaluation set: MVTec layout (test/good, test/<defect>, ground_truth) or reviews (good/, ng/).",
    ),
]
EvalGoodOpt = Annotated[Path | None, typer.Option(help="Evaluation: a folder of good images.")]
EvalDefectsOpt = Annotated[
    Path | None, typer.Option(help="Evaluation: a folder of defect images (e.g. parts reviewed NG).")
]
EvalMasksOpt = Annotated[
    Path | None, typer.Option(help="Masks of the defect images (<stem>_mask.png; default: beside them).")
]
TargetOpt = Annotated[float, typer.Option(help="Target false-reject rate for the image threshold.")]


def _eval_set(eval_root: Path | None, good: Path | None, defects: Path | None, masks: Path | None) -> Any:
    from training.anomaly.images import eval_set_from_path, folder_eval_set

    if eval_root is not None:
        if good or defects:
            raise typer.BadParameter("give --eval or --eval-good/--eval-defects, not both")
        return eval_set_from_path(eval_root)
    if good is None and defects is None:
        return None
    return folder_eval_set(good, defects, masks)


def _pair(text: str | None, what: str) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts if p.strip()]
    except ValueError:
        raise typer.BadParameter(f"{what}: expected H,W or one number, got {text!r}") from None
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise typer.BadParameter(f"{what}: expected H,W or one number, got {text!r}")


@anomaly_app.command("train")
def train_cmd(
    good: Annotated[
        Path | None, typer.Argument(help="Folder of good images (or an MVTec root: its train/good).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Model folder to write (e.g. models/my-line).")] = None,
    config: Annotated[
        Path | None, typer.Option(help="Training config YAML (settings and the defects to expect).")
    ] = None,
    defects: Annotated[
        str | None, typer.Option(help="Kinds to synthesise, comma-separated: scratch,crack,pit,stain,blob.")
    ] = None,
    imgsz: Annotated[str | None, typer.Option(help="Model input H,W (multiples of 8), e.g. 640,256.")] = None,
    crop: Annotated[str | None, typer.Option(help="Training crop H,W (default: whole images).")] = None,
    hours: Annotated[
        float | None, typer.Option(help="Training time budget (whole run, resumes included).")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps (quick tries).")] = None,
    ng: Annotated[
        Path | None, typer.Option(help="Reviewed NG parts: real defect examples to train on.")
    ] = None,
    ng_masks: Annotated[
        Path | None, typer.Option(help="Their masks (default: <stem>_mask.png beside).")
    ] = None,
    eval_root: EvalOpt = None,
    eval_good: EvalGoodOpt = None,
    eval_defects: EvalDefectsOpt = None,
    eval_masks: EvalMasksOpt = None,
    eval_every: Annotated[
        float, typer.Option(help="Minutes of training between progress evaluations (0: none).")
    ] = 0.0,
    target_false_reject: TargetOpt = 0.01,
    run: Annotated[Path | None, typer.Option(help="Run folder (default runs/anomaly/<out name>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --run from its checkpoint.")] = False,
    threads: Annotated[int | None, typer.Option(help="Torch threads (default: all cores).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    method: Annotated[
        str | None,
        typer.Option(
            help="network: segmentation network on painted defects (any part; torch). statistics: per-pixel "
            "statistics of aligned good images (fixtured parts; seconds, numpy). Default: the config's, "
            "else network."
        ),
    ] = None,
    description: Annotated[str, typer.Option(help="One line for the model card.")] = "",
    citation: Annotated[str, typer.Option(help="Dataset citation / licence for the card.")] = "",
) -> None:
    """Train on good images, then export to --out: model.onnx, model.json (thresholds from held-out good
    images for the target false-reject rate) and evaluation plots. The network method trains on synthetic
    defects shaped like the expected ones, prints progress and saves a checkpoint every minute (resume with
    --resume); the statistics method fits in seconds."""
    from training.anomaly.card import package_model
    from training.anomaly.config_file import read_config_file
    from training.anomaly.train import AnomalyTrainConfig, train_anomaly
    from training.cli_errors import plain_errors as _plain_errors

    with _plain_errors():
        if out is None:
            raise typer.BadParameter("--out (the model folder to write) is required")
        run_dir = run or Path("runs/anomaly") / out.name
        es = _eval_set(eval_root, eval_good, eval_defects, eval_masks)
        file_settings: dict[str, Any] = read_config_file(config) if config and not resume else {}
        chosen = method or file_settings.pop("method", None) or "network"
        file_settings.pop("method", None)
        if chosen not in ("network", "statistics"):
            raise typer.BadParameter(f"--method {chosen!r}: expected network or statistics")
        if chosen == "statistics":
            _fit_statistics(good, out, run_dir, es, file_settings, defects, imgsz, seed, resume,
                            target_false_reject, description, citation)  # fmt: skip
            return
        cfg = None
        if not resume:
            if good is None:
                raise typer.BadParameter("the folder of good images is required (or --resume)")
            settings = {k: v for k, v in file_settings.items() if k not in STATISTICS_ONLY}
            overrides = {
                "defects": defects.split(",") if defects else None,
                "imgsz": _pair(imgsz, "--imgsz"),
                "crop": _pair(crop, "--crop"),
                "hours": hours,
                "max_steps": max_steps,
                "ng": str(ng) if ng else None,
                "ng_masks": str(ng_masks) if ng_masks else None,
                "threads": threads,
                "seed": seed,
            }
            settings.update({k: v for k, v in overrides.items() if v is not None})
            cfg = AnomalyTrainConfig(good=str(good), **settings)
        train_anomaly(
            cfg,
            run_dir,
            resume=resume,
            hours=hours if resume else None,
            max_steps=max_steps if resume else None,
            eval_set=es,
            eval_every_s=eval_every * 60 if eval_every else None,
            echo=lambda s: typer.echo(s, err=True),
        )
        card, report = package_model(run_dir, out, es, target_false_reject, description, citation)
        if report is not None:
            typer.echo(report.summary())
        typer.echo(f"Wrote {out / 'model.onnx'} and {card} (run folder {run_dir})")


#: config keys of the statistics method only (the network's config ignores them)
STATISTICS_ONLY = ("centre", "floor", "tolerance", "polarity", "line", "line_choices", "paintings",
                   "target_false_reject")  # fmt: skip


def _fit_statistics(
    good: Path | None,
    out: Path,
    run_dir: Path,
    es: Any,
    settings: dict[str, Any],
    defects: str | None,
    imgsz: str | None,
    seed: int | None,
    resume: bool,
    target_false_reject: float,
    description: str,
    citation: str,
) -> None:
    from training.anomaly.card import package_model
    from training.anomaly.statistics import StatisticsConfig, fit_statistics

    if resume:
        raise typer.BadParameter("--resume applies to the network method (statistics fit in seconds)")
    if good is None:
        raise typer.BadParameter("the folder of good images is required")
    known = set(StatisticsConfig.__dataclass_fields__)
    cfg_values = {k: v for k, v in settings.items() if k in known}
    overrides = {"defects": defects.split(",") if defects else None, "imgsz": _pair(imgsz, "--imgsz"),
                 "seed": seed}  # fmt: skip
    cfg_values.update({k: v for k, v in overrides.items() if v is not None})
    cfg = StatisticsConfig(good=str(good), **cfg_values)
    fit_statistics(cfg, run_dir, echo=lambda s: typer.echo(s, err=True))
    card, report = package_model(run_dir, out, es, target_false_reject, description, citation)
    if report is not None:
        typer.echo(report.summary())
    typer.echo(f"Wrote {out / 'model.onnx'} and {card} (run folder {run_dir})")


@anomaly_app.command("export")
def export_cmd(
    run: Annotated[Path, typer.Argument(help="Anomaly run folder (checkpoint.pt or statistics.npz).")],
    out: Annotated[Path, typer.Option(help="Model folder to write.")],
    eval_root: EvalOpt = None,
    eval_good: EvalGoodOpt = None,
    eval_defects: EvalDefectsOpt = None,
    eval_masks: EvalMasksOpt = None,
    target_false_reject: TargetOpt = 0.01,
    description: Annotated[str, typer.Option(help="One line for the model card.")] = "",
    citation: Annotated[str, typer.Option(help="Dataset citation / licence for the card.")] = "",
) -> None:
    """Export a run (its last checkpoint) to ONNX with evaluation, plots and the model card."""
    from training.anomaly.card import package_model
    from training.cli_errors import plain_errors as _plain_errors

    with _plain_errors():
        es = _eval_set(eval_root, eval_good, eval_defects, eval_masks)
        card, report = package_model(run, out, es, target_false_reject, description, citation)
        if report is not None:
            typer.echo(report.summary())
        typer.echo(f"Wrote {out / 'model.onnx'} and {card}")


@anomaly_app.command("evaluate")
def evaluate_cmd(
    model: Annotated[Path, typer.Argument(help="Anomaly .onnx model (ours or an anomalib export).")],
    eval_root: EvalOpt = None,
    eval_good: EvalGoodOpt = None,
    eval_defects: EvalDefectsOpt = None,
    eval_masks: EvalMasksOpt = None,
    held_out: Annotated[
        Path | None,
        typer.Option(help="Good images for the threshold (default: the training run's held-out)."),
    ] = None,
    target_false_reject: TargetOpt = 0.01,
    out: Annotated[Path | None, typer.Option(help="Folder for evaluation.json and the plots.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
) -> None:
    """Image/pixel AUROC, AUPRO, the operating point and the escape rate at 1/2/5 % false reject,
    through the edge runtime."""
    from training.anomaly.card import held_out_paths
    from training.anomaly.evaluate import evaluate_anomaly
    from training.anomaly.images import list_images
    from training.cli_errors import plain_errors as _plain_errors

    with _plain_errors():
        es = _eval_set(eval_root, eval_good, eval_defects, eval_masks)
        if es is None:
            raise typer.BadParameter("give --eval (MVTec root) or --eval-good / --eval-defects")
        held: list[Path] = []
        if held_out is not None:
            held = list_images(held_out)
        else:
            card_path = model.parent / "model.json"
            if card_path.is_file():
                run = (json.loads(card_path.read_text()).get("training") or {}).get("run")
                held = held_out_paths(Path(run)) if run else []
        out_dir = out or model.parent / "eval" / "latest"
        report = evaluate_anomaly(model, es, held, target_false_reject, out_dir=out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "evaluation.json").write_text(json.dumps(report.to_dict(), indent=2))
        typer.echo(json.dumps(report.to_dict(), indent=2) if json_out else report.summary())
        typer.echo(f"Plots and JSON: {out_dir}", err=json_out)


@anomaly_app.command("good-from-archive")
def good_from_archive_cmd(
    archive: Annotated[Path, typer.Argument(help="The agent's NG archive folder (site file: archive.path).")],
    dst: Annotated[Path, typer.Argument(help="Folder to copy the good images into.")],
    line: Annotated[str, typer.Option(help="The line whose OK parts to take.")],
    camera: Annotated[str | None, typer.Option(help="Only this camera's images.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many (newest first).")] = None,
) -> None:
    """Copy the raw images of a line's archived OK parts (archive.ok_sample_rate > 0) into a folder of good
    images to train on."""
    from training.anomaly.archive_good import collect_good
    from training.cli_errors import plain_errors as _plain_errors

    with _plain_errors():
        copies = collect_good(archive, dst, line, camera, limit)
        typer.echo(f"copied {len(copies)} good image(s) to {dst}")
