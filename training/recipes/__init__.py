"""Reproducible training recipes: the demo model (synthetic data) and the NEU-DET model (real steel data)."""

from pathlib import Path

_LAST_RUN = "last_run.txt"


def remember_run(work: Path, run: Path) -> None:
    """Note which run folder the `train` stage produced, for the `finish` stage."""
    (work / _LAST_RUN).write_text(str(run))


def last_run(work: Path, default_name: str) -> Path:
    """The run folder `train` noted (written when training ends), else `work/runs/<default_name>`:
    a run still training or interrupted can be finished from its best.pt too."""
    note = work / _LAST_RUN
    return Path(note.read_text().strip()) if note.exists() else work / "runs" / default_name
