"""Dataset import (VOC, COCO, YOLO, with planted problems), deterministic stratified split, stats, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from training_helpers import NEU_DET, Planted
from typer.testing import CliRunner

from training.datasets import (
    dataset_hash,
    import_dataset,
    read_labels,
    split_dataset,
    split_images,
)
from training.errors import TrainingInputError
from training.stats import dataset_stats, plot_stats
from training.synth import CLASSES


def _check_report(planted: Planted, dst: Path, fmt: str) -> None:
    report = import_dataset(planted.root, dst, fmt=fmt, classes=list(CLASSES))  # type: ignore[arg-type]
    assert report.images_imported == planted.good_images
    assert report.classes == list(CLASSES)
    for problem, fragment in planted.expected_problems.items():
        hits = [i for i in report.issues if i.problem == problem]
        assert hits, f"{problem} not reported; report:\n{report.to_text()}"
        assert any(fragment in i.file or fragment in i.detail for i in hits), (problem, hits)
    # nothing silently dropped: every image file in the source is imported or listed as skipped
    skipped = {Path(i.file).name for i in report.issues if i.action == "image skipped"}
    assert {"corrupt.jpg"} <= skipped
    assert len(list((dst / "images").iterdir())) == planted.good_images
    # every written label is valid YOLO inside the image, and the clipped box stayed
    for label in (dst / "labels").iterdir():
        arr = np.loadtxt(label, ndmin=2) if label.read_text().strip() else np.zeros((0, 5))
        assert arr.shape[1] == 5
        assert ((arr[:, 1:] >= 0) & (arr[:, 1:] <= 1)).all()
        assert (arr[:, 3:] > 0).all()
        assert set(arr[:, 0].astype(int)) <= set(range(len(CLASSES)))
    clipped = read_labels(
        dst / "images" / next(p.name for p in (dst / "images").iterdir() if "img_000" in p.name)
    )
    x2 = clipped.boxes_norm[:, 0] + clipped.boxes_norm[:, 2] / 2
    assert np.isclose(x2.max(), 1.0, atol=1e-5)  # the outside box now ends at the right edge
    # the report is written both ways
    saved = json.loads((dst / "import_report.json").read_text())
    assert saved["issue_counts"] == report.counts()
    assert "box clipped" in (dst / "import_report.txt").read_text()


def test_import_voc_reports_every_planted_problem(voc_broken: Planted, tmp_path: Path) -> None:
    _check_report(voc_broken, tmp_path / "out", "voc")


def test_import_coco_reports_every_planted_problem(coco_broken: Planted, tmp_path: Path) -> None:
    _check_report(coco_broken, tmp_path / "out", "coco")


def test_import_yolo_reports_every_planted_problem(yolo_broken: Planted, tmp_path: Path) -> None:
    _check_report(yolo_broken, tmp_path / "out", "yolo")


def test_voc_classes_found_when_not_given(voc_broken: Planted, tmp_path: Path) -> None:
    report = import_dataset(voc_broken.root, tmp_path / "out", fmt="voc")
    assert report.classes == sorted({*CLASSES, "dent"})  # without a class list, every <name> is a class
    assert not [i for i in report.issues if i.problem == "unknown_class"]


def test_same_dataset_in_three_formats_gives_same_labels(
    voc_broken: Planted, coco_broken: Planted, yolo_broken: Planted, tmp_path: Path
) -> None:
    labels = {}
    for fmt, planted in (("voc", voc_broken), ("coco", coco_broken), ("yolo", yolo_broken)):
        dst = tmp_path / f"out_{fmt}"
        import_dataset(planted.root, dst, fmt=fmt, classes=list(CLASSES))  # type: ignore[arg-type]
        labels[fmt] = {p.stem: sorted(p.read_text().split("\n")) for p in (dst / "labels").iterdir()}
    assert labels["voc"].keys() == labels["coco"].keys() == labels["yolo"].keys()
    for stem in labels["voc"]:
        voc = np.array([r.split() for r in labels["voc"][stem] if r], float)
        for other in ("coco", "yolo"):
            got = np.array([r.split() for r in labels[other][stem] if r], float)
            np.testing.assert_allclose(got, voc, atol=2e-5, err_msg=f"{other} {stem}")


def test_import_refuses_bad_input_with_plain_words(tmp_path: Path, yolo_broken: Planted) -> None:
    with pytest.raises(TrainingInputError, match="does not exist"):
        import_dataset(tmp_path / "nope", tmp_path / "out", fmt="voc")
    with pytest.raises(TrainingInputError, match="unknown format"):
        import_dataset(yolo_broken.root, tmp_path / "out", fmt="labelme")  # type: ignore[arg-type]
    with pytest.raises(TrainingInputError, match=r"no Pascal VOC \.xml"):
        import_dataset(yolo_broken.root, tmp_path / "out", fmt="voc")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("precious")
    with pytest.raises(TrainingInputError, match="not empty"):
        import_dataset(yolo_broken.root, tmp_path / "full", fmt="yolo")
    assert (tmp_path / "full" / "keep.txt").read_text() == "precious"
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(TrainingInputError, match=r"bad\.json: not valid JSON"):
        import_dataset(bad_json, tmp_path / "out2", fmt="coco")


def test_split_is_deterministic_and_stratified(voc_broken: Planted, tmp_path: Path) -> None:
    dst = tmp_path / "ds"
    import_dataset(voc_broken.root, dst, fmt="voc", classes=list(CLASSES))
    first = split_dataset(dst, val=0.25, test=0.25, seed=7)
    lists = {s: (dst / f"{s}.txt").read_text() for s in ("train", "val", "test")}
    again = split_dataset(dst, val=0.25, test=0.25, seed=7)
    assert {s: (dst / f"{s}.txt").read_text() for s in lists} == lists
    assert again.counts == first.counts
    assert sum(first.counts.values()) == voc_broken.good_images
    for split, per_class in first.class_images.items():
        assert all(n > 0 for n in per_class.values()), f"a class is missing from {split}: {per_class}"
    other = split_dataset(dst, val=0.25, test=0.25, seed=8)
    assert {s: (dst / f"{s}.txt").read_text() for s in lists} != lists or other.counts != first.counts
    # the lists are disjoint and Ultralytics-readable (./images/...)
    parts = [set(split_images(dst, s)) for s in ("train", "val", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    data = yaml.safe_load((dst / "data.yaml").read_text())
    assert data["train"] == "train.txt" and data["names"] == dict(enumerate(CLASSES))


def test_split_rejects_bad_fractions(synth_yolo: Path) -> None:
    with pytest.raises(TrainingInputError, match="add up to less than 1"):
        split_dataset(synth_yolo, val=0.6, test=0.5)


def test_stats_counts_and_plot(synth_yolo: Path, tmp_path: Path) -> None:
    stats = dataset_stats(synth_yolo)
    assert set(stats.splits) == {"train", "val"}
    total_boxes = sum(len(read_labels(p).class_ids) for p in (synth_yolo / "images").iterdir())
    assert sum(sum(st.boxes_per_class.values()) for st in stats.splits.values()) == total_boxes
    assert sum(st.images for st in stats.splits.values()) == 24
    assert sum(sum(st.size_histogram.values()) for st in stats.splits.values()) == total_boxes
    png = plot_stats(stats, tmp_path / "stats.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "scratch" in stats.to_text()


def test_dataset_hash_changes_with_content(synth_yolo: Path) -> None:
    before = dataset_hash(synth_yolo)
    assert dataset_hash(synth_yolo) == before
    label = next((synth_yolo / "labels").iterdir())
    label.write_text(label.read_text() + "0 0.5 0.5 0.1 0.1\n")
    assert dataset_hash(synth_yolo) != before


def test_cli_import_split_stats_synth(yolo_broken: Planted, tmp_path: Path) -> None:
    from edge_agent.cli import app

    runner = CliRunner()
    dst = tmp_path / "cli"
    res = runner.invoke(
        app,
        [
            "dataset",
            "import",
            str(yolo_broken.root),
            str(dst),
            "--format",
            "yolo",
            "--val",
            "0.25",
            "--seed",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "unreadable_image" in res.output and "Split: train" in res.output
    res = runner.invoke(app, ["dataset", "stats", str(dst)])
    assert res.exit_code == 0, res.output
    assert (dst / "stats.png").is_file()
    res = runner.invoke(
        app, ["dataset", "import", str(tmp_path / "missing"), str(tmp_path / "x"), "-f", "voc"]
    )
    assert res.exit_code == 2
    assert "does not exist" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["dataset", "synth", str(tmp_path / "syn"), "--n", "3", "--size", "48"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "syn" / "images").rglob("*.png"))) == 3


@pytest.mark.neu
@pytest.mark.skipif(not NEU_DET.is_dir(), reason="../shared/datasets/neu-det not present")
def test_neu_det_imports_with_its_quirks(tmp_path: Path) -> None:
    report = import_dataset(NEU_DET, tmp_path / "neu", fmt="voc")
    assert report.classes == [
        "crazing",
        "inclusion",
        "patches",
        "pitted_surface",
        "rolled-in_scale",
        "scratches",
    ]
    # 1,800 files; one is a pixel-identical duplicate, which is reported, not silently kept
    assert report.images_imported + report.skipped_images == 1800
    assert report.counts().get("duplicate_image", 0) == report.skipped_images
    assert "size_mismatch" not in report.counts()  # "depth 1" but 3-channel JPEGs: sizes still agree
    assert report.boxes_imported >= 4180
