"""Where an archive keeps a part's files: the layout the agent writes and the console, `console review`
exports, the hub link and `hub collect` read.

    <root>/<line>/<YYYY-MM-DD>/<seq:010d>_<part_id>_<verdict>_<camera>[_annotated|_anomaly].<ext>

The line, part id and camera are made safe for any file system (`safe_name`); the zero-padded seq
makes name order age order inside a day folder. The NG archive and the capture archive share it (a
capture sidecar is `<seq:010d>_<part_id>_<verdict>.capture.json` next to its images).

Example:
    >>> from pathlib import Path
    >>> folder, stem = part_location(Path("/a"), "line 1", "2026-03-01", 42, "P/7", "NG")
    >>> str(folder), stem
    ('/a/line_1/2026-03-01', '0000000042_P_7_NG')
    >>> camera_file(stem, "top cam", ".jpg"), camera_file(stem, "top", ".jpg", "_annotated")
    ('0000000042_P_7_NG_top_cam.jpg', '0000000042_P_7_NG_top_annotated.jpg')
    >>> str(line_folder(Path("/a"), "line 1")), seq_pattern(42)
    ('/a/line_1', '0000000042_*')
"""

from __future__ import annotations

import re
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: str) -> str:
    """`text` with every run of characters outside [A-Za-z0-9_.-] replaced by one `_`."""
    return _UNSAFE.sub("_", text)


def line_folder(root: Path, line: str) -> Path:
    """The folder holding every day folder of `line`."""
    return root / safe_name(line)


def part_location(root: Path, line: str, day: str, seq: int, part_id: str, verdict: str) -> tuple[Path, str]:
    """(day folder, file stem) of one part: every file of the part is `<stem>...` in that folder."""
    return line_folder(root, line) / day, f"{seq_pattern(seq)[:-1]}{safe_name(part_id)}_{verdict}"


def camera_file(stem: str, camera: str, ext: str, suffix: str = "") -> str:
    """The file name of one camera's image of a part (`suffix`: "", "_annotated" or "_anomaly")."""
    return f"{stem}_{safe_name(camera)}{suffix}{ext}"


def seq_pattern(seq: int) -> str:
    """A glob matching every file of result `seq` in a day folder."""
    return f"{seq:010d}_*"
