"""`edge-inspect console hash-password` and `edge-inspect dataset from-reviews`.

    edge-inspect console hash-password                      # for console.users[].password_hash
    edge-inspect dataset from-reviews data/reviewed         # reviewed images + corrected labels
    edge-inspect dataset import --format yolo data/reviewed data/neu-plus-reviews   # or train on it
    edge-inspect dataset anomaly-from-reviews data/tiles-reviewed --line tiles   # good/ and ng/ images

`from-reviews` reads the journal (the agent side owns it; `training` never imports `edge_agent`) and
writes the Ultralytics layout that `dataset import` and `train` read: `images/`, `labels/` (YOLO boxes from
each result's current review), `data.yaml`, and `reviews.jsonl` saying where every image came from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer

from edge_agent.agent_cli import ConfigOption, default_config_path
from opcua.cli import hash_password_command

console_app = typer.Typer(
    help="The line console served by the agent (docs/console.md).", no_args_is_help=True
)


# the same scrypt format and rules as OPC UA's users: one command serves both
console_app.command(
    "hash-password", help="Print the scrypt hash to put in `console.users[].password_hash`."
)(hash_password_command)


def _journal_and_archive(
    config: Path | None, journal: Path | None, archive: Path | None
) -> tuple[Path, Path]:
    """The journal and archive paths given, else the site file's; exits 2 with the reason."""
    if journal is None or archive is None:
        from contract.yamlconf import ConfigError
        from edge_agent.config import load_agent_config

        try:
            cfg = load_agent_config(config or default_config_path())
        except ConfigError as exc:
            typer.secho(f"configuration errors:\n{exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
        journal = journal or cfg.site.journal.path
        archive = archive or cfg.site.archive.path
    if not Path(journal).is_file():
        typer.echo(f"error: journal {journal} does not exist", err=True)
        raise typer.Exit(2)
    return Path(journal), Path(archive)


def _empty_destination(dst: Path, overwrite: bool) -> None:
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        typer.echo(f"error: {dst} is not empty (use --overwrite to replace it)", err=True)
        raise typer.Exit(2)
    if dst.exists() and overwrite:
        shutil.rmtree(dst)


JournalOption = Annotated[Path | None, typer.Option(help="Journal file (default: from the site file).")]
ArchiveOption = Annotated[Path | None, typer.Option(help="NG archive folder (default: from the site file).")]


def anomaly_from_reviews(
    dst: Annotated[Path, typer.Argument(help="Destination folder: good/, ng/, reviews.jsonl.")],
    line: Annotated[str, typer.Option(help="The anomaly line whose reviews to take.")],
    config: ConfigOption = None,
    journal: JournalOption = None,
    archive: ArchiveOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty destination.")] = False,
) -> None:
    """Write an anomaly line's reviewed parts for its next training: false rejects and confirmed OK parts
    into good/ (train on them as good parts), confirmed NG parts and escapes into ng/ (evaluate on them).
    Results whose images are no longer archived are listed and skipped."""
    from edge_agent.anomaly_reviews import reviewed_images, write_reviewed_images

    journal, archive = _journal_and_archive(config, journal, archive)
    _empty_destination(dst, overwrite)
    found = reviewed_images(journal, archive, line)
    for reason in found.missing:
        typer.echo(f"skipped {reason}", err=True)
    if not found.good and not found.ng:
        typer.echo(f"error: no reviewed images of line {line} in {journal} / {archive}", err=True)
        raise typer.Exit(1)
    dst.mkdir(parents=True, exist_ok=True)
    written = write_reviewed_images(found, dst)
    typer.echo(f"wrote {written} image(s) to {dst}: {len(found.good)} good, {len(found.ng)} NG")


def from_reviews(
    dst: Annotated[Path, typer.Argument(help="Destination folder for the dataset.")],
    config: ConfigOption = None,
    journal: JournalOption = None,
    archive: ArchiveOption = None,
    line: Annotated[str | None, typer.Option(help="Only this line's reviews.")] = None,
    classes: Annotated[
        str | None,
        typer.Option(help="Comma-separated class list, in model order (default: from the results)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty destination.")] = False,
) -> None:
    """Write every reviewed result's archived images with the reviewer's boxes as YOLO labels.

    Labels follow `contract.yolo_labels` (as `hub collect`'s do): boxes clipped to the image; a false
    reject becomes an image with an empty label file (a good part); an escape with drawn boxes becomes
    the missed defects. Reviews whose boxes contradict their decision (a false reject that kept
    boxes, an escape or confirmed NG without one) are refused with a message; NG parts marked 'not
    localised' are left out (no box to learn from). Results whose images are no longer in the archive
    are listed and skipped."""
    from contract.yolo_labels import label_text, review_labels
    from edge_agent.archive import archived_image
    from edge_agent.journal import ResultJournal
    from edge_agent.reviews import export_problem

    journal, archive = _journal_and_archive(config, journal, archive)
    _empty_destination(dst, overwrite)
    j = ResultJournal(journal)
    try:
        reviews = j.current_reviews(line)
        results = {r["result_seq"]: j.get(r["result_seq"]) for r in reviews}
    finally:
        j.close()
    if not reviews:
        typer.echo(f"error: no reviews in {journal}" + (f" for line {line}" if line else ""), err=True)
        raise typer.Exit(1)
    usable, refused = [], 0
    for review in reviews:
        problem = export_problem(review)
        if problem is None:
            usable.append(review)
            continue
        refused += problem[0] == "refused"
        typer.echo(f"{problem[0]} #{review['result_seq']} ({review['decision']}): {problem[1]}", err=True)
    reviews = usable

    names: dict[int, str] = {}
    if classes:
        names = dict(enumerate(c.strip() for c in classes.split(",") if c.strip()))
    else:
        for review in reviews:
            result = results.get(review["result_seq"])
            pairs = [(b["class_id"], b["class"]) for b in review["boxes"]]
            pairs += [(d.class_id, d.class_name) for d in (result.defects if result else [])]
            for cid, name in pairs:
                if names.setdefault(cid, name) != name:
                    typer.echo(
                        f"error: class id {cid} is {names[cid]!r} in one result and {name!r} in another "
                        "(different models); pass --classes or --line",
                        err=True,
                    )
                    raise typer.Exit(2)
    by_name = {v: k for k, v in names.items()}

    (dst / "images").mkdir(parents=True)
    (dst / "labels").mkdir()
    written, skipped = 0, []
    with open(dst / "reviews.jsonl", "w", encoding="utf-8") as manifest:
        for review in reviews:
            seq = review["result_seq"]
            result = results.get(seq)
            if result is None:
                skipped.append(f"#{seq}: the result is no longer in the journal")
                continue
            for frame in result.frames:
                image = archived_image(Path(archive), result, frame.camera)
                if image is None:
                    skipped.append(f"#{seq}/{frame.camera}: no archived image")
                    continue
                stem = f"{result.line}_{seq:010d}_{frame.camera}"
                shutil.copyfile(image, dst / "images" / f"{stem}{image.suffix}")
                for box in review["boxes"]:
                    if box["camera"] == frame.camera and box["class"] not in by_name:
                        typer.echo(f"error: class {box['class']!r} (#{seq}) is not in --classes", err=True)
                        raise typer.Exit(2)
                rows = review_labels(
                    review, frame.camera, frame.width, frame.height, lambda box: by_name[box["class"]]
                )
                (dst / "labels" / f"{stem}.txt").write_text(label_text(rows))
                manifest.write(
                    json.dumps(
                        {
                            "image": f"images/{stem}{image.suffix}",
                            "seq": seq,
                            "result_id": result.result_id,
                            "line": result.line,
                            "camera": frame.camera,
                            "verdict": result.verdict,
                            "decision": review["decision"],
                            "reviewer": review["reviewer"],
                            "reviewed_at": review["time"],
                            "boxes": len(rows),
                        }
                    )
                    + "\n"
                )
                written += 1
    top = max(names, default=-1)
    full_names = {i: names.get(i, f"class_{i}") for i in range(top + 1)}
    import yaml

    (dst / "data.yaml").write_text(
        yaml.safe_dump(
            {"path": str(dst.resolve()), "train": "images", "val": "images", "names": full_names},
            sort_keys=False,
        )
    )
    for line_ in skipped:
        typer.echo(f"skipped {line_}", err=True)
    typer.echo(
        f"wrote {written} image(s) from {len(reviews)} review(s) to {dst} "
        f"(classes: {', '.join(full_names.values())})"
        + (f"; {refused} contradictory review(s) refused" if refused else "")
    )
    if written == 0:
        raise typer.Exit(1)


#: commands of training's `dataset` group that read the journal: edge_agent.cli adds them there
DATASET_COMMANDS = {"from-reviews": from_reviews, "anomaly-from-reviews": anomaly_from_reviews}


def register(app: typer.Typer) -> None:
    app.add_typer(console_app, name="console")
