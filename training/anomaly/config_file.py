"""The anomaly training config file (YAML): the settings of `AnomalyTrainConfig` and the defects to expect.

    # configs/training/my-line-anomaly.yaml
    imgsz: [256, 256]
    hours: 0.5
    defects:
      crack: {share: 2, size: [0.3, 1.0], contrast: [20, 90], polarity: dark}
      pit: {}

A key that is not a setting is an error naming the file, line and key.

Example:
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "a.yaml"
    >>> _ = p.write_text("imgsz: [64, 64]\\ndefect: {crack: {}}\\n")
    >>> read_config_file(p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    training.errors.TrainingInputError: ...a.yaml:2: unknown key 'defect' (did you mean 'defects'?)
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from training.errors import TrainingInputError

SETTINGS = (
    "imgsz", "crop", "width", "pool", "defects", "max_defects", "defect_probability", "batch", "lr", "hours",
    "max_steps", "seed", "held_out", "flips", "ng", "ng_masks", "real_share", "threads", "jpeg_quality",
    # the statistics method (training/anomaly/statistics.py)
    "method", "centre", "floor", "tolerance", "polarity", "line", "line_choices", "paintings",
    "target_false_reject",
)  # fmt: skip


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The file's settings as a dict (keys checked); relative `ng` / `ng_masks` paths are taken from the
    file's folder."""
    path = Path(path)
    if not path.is_file():
        raise TrainingInputError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TrainingInputError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict) or node is None or not isinstance(node, yaml.MappingNode):
        raise TrainingInputError(f"{path}: expected a mapping of settings")
    for key_node, _ in node.value:
        key = key_node.value
        if key not in SETTINGS:
            close = difflib.get_close_matches(key, SETTINGS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (settings: {', '.join(SETTINGS)})"
            raise TrainingInputError(f"{path}:{key_node.start_mark.line + 1}: unknown key {key!r}{hint}")
    for key in ("ng", "ng_masks"):
        if data.get(key) and not Path(str(data[key])).is_absolute():
            data[key] = str((path.parent / str(data[key])).resolve())
    return data
