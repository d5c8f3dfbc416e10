"""`dataset import --format yolo` keeps the source's train/val/test split (and says so); a dataset whose
validation images are its training images gets a loud warning before training."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import yaml

from training.datasets import import_dataset, split_images, train_val_overlap
from training.synth import write_dataset
from training.train import warn_if_val_is_train


def test_ultralytics_layout_split_is_kept(tmp_path: Path) -> None:
    src = write_dataset(tmp_path / "src", n=20, size=(64, 64), seed=0, val_fraction=0.25).parent
    report = import_dataset(src, tmp_path / "canon", fmt="yolo")
    data = tmp_path / "canon" / "data.yaml"
    cfg = yaml.safe_load(data.read_text())
    assert cfg["train"] == "train.txt" and cfg["val"] == "val.txt"
    assert report.source_split == {"train": 15, "val": 5}
    assert "Kept the source's split: train 15, val 5" in report.to_text()
    source_val = {p.name for p in (src / "images" / "val").iterdir()}
    assert {p.name for p in split_images(data, "val")} == source_val
    assert train_val_overlap(data) == (0, 5)


def test_roboflow_layout_with_valid_and_test_is_kept(tmp_path: Path) -> None:
    synth = write_dataset(tmp_path / "synth", n=12, size=(64, 64), seed=1, val_fraction=0.0).parent
    src = tmp_path / "roboflow"
    images = sorted((synth / "images" / "train").iterdir())
    for i, image in enumerate(images):
        split = "train" if i < 8 else "valid" if i < 10 else "test"
        (src / split / "images").mkdir(parents=True, exist_ok=True)
        (src / split / "labels").mkdir(parents=True, exist_ok=True)
        shutil.copy(image, src / split / "images" / image.name)
        label = synth / "labels" / "train" / f"{image.stem}.txt"
        shutil.copy(label, src / split / "labels" / label.name)
    shutil.copy(synth / "data.yaml", src / "data.yaml")
    report = import_dataset(src, tmp_path / "canon", fmt="yolo")
    assert report.source_split == {"train": 8, "val": 2, "test": 2}
    cfg = yaml.safe_load((tmp_path / "canon" / "data.yaml").read_text())
    assert (cfg["train"], cfg["val"], cfg["test"]) == ("train.txt", "val.txt", "test.txt")
    assert report.boxes_imported > 0  # the labels next to each split's images were found


def test_flat_source_says_it_has_no_split_and_training_warns(tmp_path: Path, caplog) -> None:
    synth = write_dataset(tmp_path / "synth", n=6, size=(64, 64), seed=2, val_fraction=0.0).parent
    flat = tmp_path / "flat"
    shutil.copytree(synth / "images" / "train", flat / "images")
    shutil.copytree(synth / "labels" / "train", flat / "labels")
    shutil.copy(synth / "data.yaml", flat / "data.yaml")
    report = import_dataset(flat, tmp_path / "canon", fmt="yolo")
    assert report.source_split == {}
    assert "The source has no split: run `dataset split` before training." in report.to_text()
    data = tmp_path / "canon" / "data.yaml"
    assert train_val_overlap(data) == (6, 6)
    with caplog.at_level(logging.WARNING, logger="training.train"):
        assert warn_if_val_is_train(data) == (6, 6)
    (record,) = [r for r in caplog.records if "validation images are also training images" in r.getMessage()]
    assert "train and val are the same images" in record.getMessage()
    assert "edge-inspect dataset split" in record.getMessage()
