"""Labelling-tool formats: Label Studio JSON and CVAT for images 1.1 XML, in and out.

In: `dataset import --format label-studio|cvat` parses the tool's export into the importer's raw records
(`training.datasets` then checks and writes the canonical layout, with its report). Out: `dataset export`
writes a labelling batch (images + the tool's file) from a dataset's labels and/or a model's boxes as
pre-annotations, so images go to a labelling tool and come back without hand conversion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("label-studio", "cvat")


@dataclass
class BatchBox:
    label: str
    xyxy: tuple[float, float, float, float]  # pixels
    score: float | None = None  # set for a model's pre-annotation


@dataclass
class BatchImage:
    """One image of a labelling batch: where it is, its size, its labels and the model's proposals."""

    path: Path  # the image file inside the batch folder
    width: int
    height: int
    labels: list[BatchBox] = field(default_factory=list)  # verified boxes (from a dataset)
    predictions: list[BatchBox] = field(default_factory=list)  # a model's boxes (pre-annotations)
    labelled: bool = False  # True when `labels` is a verified answer (an empty list = defect-free)
