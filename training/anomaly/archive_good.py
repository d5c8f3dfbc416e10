"""Good parts for an anomaly training, from a running line's NG archive.

With `archive.ok_sample_rate` raised in the site file (e.g. 0.2: every fifth OK part), the agent archives
raw images of OK parts beside the NG ones, in the layout of `contract.archive_layout`:

    <archive>/<line>/<YYYY-MM-DD>/<seq:010d>_<part_id>_<verdict>_<camera>[_annotated|_anomaly].<ext>

`collect_good` copies the raw images of OK parts (no annotated copies, no anomaly maps) of one line, and
optionally one camera, into a flat folder to train on; newest first up to `limit`.

Example:
    >>> parse_name("0000000042_P_7_OK_top.jpg")
    ('0000000042', 'OK', 'top')
    >>> parse_name("0000000042_P_7_NG_top_annotated.jpg") is None
    True
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from contract.archive_layout import line_folder, safe_name
from training.errors import TrainingInputError

_NAME = re.compile(r"^(\d{10})_.+?_(OK|NG)_(.+)\.(png|jpg|jpeg|bmp|tif|tiff)$", re.IGNORECASE)
_DERIVED = ("_annotated", "_anomaly")


def parse_name(name: str) -> tuple[str, str, str] | None:
    """(seq, verdict, camera) of a raw archived image's file name; None for anything else."""
    m = _NAME.match(name)
    if m is None or any(m.group(3).endswith(s) for s in _DERIVED):
        return None
    return m.group(1), m.group(2).upper(), m.group(3)


def collect_good(
    archive: str | Path, dst: str | Path, line: str, camera: str | None = None, limit: int | None = None
) -> list[Path]:
    """Copy the line's archived OK images into `dst`; returns the copies (newest first)."""
    root = line_folder(Path(archive).expanduser(), line)
    if not root.is_dir():
        raise TrainingInputError(f"{root}: no archive for line {line!r} (is the agent archiving its parts?)")
    want = safe_name(camera) if camera else None
    found = []
    for day in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True):
        for f in sorted(day.iterdir(), reverse=True):
            parsed = parse_name(f.name)
            if parsed and parsed[1] == "OK" and (want is None or parsed[2] == want):
                found.append(f)
    if not found:
        raise TrainingInputError(
            f"{root}: no archived OK images{f' of camera {camera}' if camera else ''}; raise "
            "archive.ok_sample_rate in the site file and let the line run"
        )
    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    copies = []
    for f in found[:limit]:
        target = out / f"{f.parent.name}_{f.name}"
        shutil.copy2(f, target)
        copies.append(target)
    return copies
