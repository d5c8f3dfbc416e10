"""NG archive: bookkeeping that stays flat however many images it keeps, the quota enforced at start,
and write errors (disk full, a path in the way) logged once, counted always."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
from test_archive_journal import outcome

from edge_agent.archive import Archive
from edge_agent.config import ArchiveConfig

IMAGE = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)


def _fill(folder: Path, names: list[str], size: int, mtime: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x" * size)
        os.utime(folder / name, (mtime, mtime))


def test_quota_is_enforced_at_start_oldest_day_first(tmp_path: Path) -> None:
    root = tmp_path / "arch"
    now = time.time()
    _fill(root / "l1" / "2026-11-01", [f"{i:010d}_P_NG_top.jpg" for i in range(1, 11)], 100_000, now)
    _fill(root / "l2" / "2026-11-02", [f"{i:010d}_P_NG_top.jpg" for i in range(11, 21)], 100_000, now)
    _fill(root / "l1" / "2026-11-03", [f"{i:010d}_P_NG_top.jpg" for i in range(21, 31)], 100_000, now)
    archive = Archive(ArchiveConfig(path=root, quota_mb=1.5, min_free_mb=0))  # 3 MB there, quota 1.5
    archive.start()
    try:
        assert archive.stats.bytes_used <= 1.5e6 * 0.95
        assert not (root / "l1" / "2026-11-01").exists()  # the oldest day went first, folder and all
        left = sorted(p.name for p in root.rglob("*.jpg"))
        assert left[-1] == "0000000030_P_NG_top.jpg" and len(left) == 14
        assert archive.stats.deleted_for_quota == 16
    finally:
        archive.stop()


def test_bookkeeping_is_one_entry_per_day_folder_not_per_image(tmp_path: Path) -> None:
    config = ArchiveConfig(
        path=tmp_path / "arch", quota_mb=0.2, min_free_mb=0, ok_sample_rate=0.0, annotated=True
    )  # raw + annotated: two images a part
    archive = Archive(config)
    archive.start()
    for seq in range(1, 301):
        while not archive.submit(outcome(seq, "NG", IMAGE)):
            time.sleep(0.005)  # queue full: wait, every part must be written for this test
    archive.stop()
    assert archive.stats.written == 600 and archive.stats.deleted_for_quota > 300
    assert archive.stats.bytes_used <= 0.2e6
    on_disk = sum(p.stat().st_size for p in (tmp_path / "arch").rglob("*") if p.is_file())
    assert on_disk == archive.stats.bytes_used
    assert len(archive._folder_bytes) == 1  # what it remembers: one day folder, not 600 files


def test_write_errors_are_logged_once_and_recovery_is_logged(tmp_path: Path, caplog) -> None:
    root = tmp_path / "arch"
    root.mkdir()
    (root / "l_1").write_text("a file where the line's folder must go")  # every write fails
    archive = Archive(ArchiveConfig(path=root, min_free_mb=0, annotated=True))
    archive.start()
    with caplog.at_level(logging.INFO, logger="edge_agent.archive"):
        for seq in range(1, 6):
            assert archive.submit(outcome(seq, "NG", IMAGE))
        deadline = time.monotonic() + 10
        while archive.stats.write_errors < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert archive.stats.write_errors == 5 and archive.stats.degraded
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "l_1" in errors[0].getMessage()
        (root / "l_1").unlink()
        assert archive.submit(outcome(6, "NG", IMAGE))
        archive.stop()
    assert archive.stats.written == 2 and not archive.stats.degraded
    assert any("writing again" in r.getMessage() for r in caplog.records)
