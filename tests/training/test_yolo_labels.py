"""The one YOLO label writer (`contract.yolo_labels`): `dataset import` writes a box that sticks out of
the image exactly as `dataset from-reviews` and `hub collect` write a reviewed box (clipped, same digits),
and the synthetic generator's labels come from it too."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from training_helpers import _voc_xml

from contract.yolo_labels import label_text, review_labels, yolo_line
from training.datasets import import_dataset
from training.synth import yolo_label_lines


def test_import_and_reviews_write_the_same_clipped_label(tmp_path: Path) -> None:
    src = tmp_path / "voc"
    src.mkdir()
    cv2.imwrite(str(src / "part.png"), np.full((48, 64, 3), 90, np.uint8))
    (src / "part.xml").write_text(
        _voc_xml("part.png", 64, 48, [("pit", 50, 10, 90, 30), ("pit", 70, 5, 80, 9)])
    )
    report = import_dataset(src, tmp_path / "canon", fmt="voc")
    assert report.counts() == {"box_outside_image": 1, "zero_area_box": 1}
    written = (tmp_path / "canon" / "labels" / "part.txt").read_text()

    review = {
        "decision": "confirmed_ng",
        "boxes": [
            {"camera": "top", "class": "pit", "class_id": 0, "xyxy": [50, 10, 90, 30]},
            {"camera": "top", "class": "pit", "class_id": 0, "xyxy": [70, 5, 80, 9]},  # wholly outside
        ],
    }
    assert (
        written
        == label_text(review_labels(review, "top", 64, 48))
        == "0 0.890625 0.416667 0.218750 0.416667\n"
    )
    assert review_labels({**review, "decision": "false_reject"}, "top", 64, 48) == []  # a good part
    assert review_labels(review, "side", 64, 48) == []  # another camera's boxes


def test_synthetic_labels_come_from_the_same_writer() -> None:
    boxes = [(2, 10, 12, 30, 28), (0, 0, 0, 64, 48)]
    assert yolo_label_lines(boxes, 64, 48) == [yolo_line(c, xyxy, 64, 48) for c, *xyxy in boxes]
    assert yolo_label_lines(boxes, 64, 48)[1] == "0 0.500000 0.500000 1.000000 1.000000"
