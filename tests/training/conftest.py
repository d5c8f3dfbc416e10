"""Fixtures for tests/training (the datasets with planted problems live in `training_helpers`)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # training_helpers

from training_helpers import coco_broken, synth_yolo, voc_broken, yolo_broken

__all__ = ["coco_broken", "synth_yolo", "voc_broken", "yolo_broken"]
