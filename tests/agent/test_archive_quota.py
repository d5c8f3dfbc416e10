"""NG archive: bookkeeping that stays flat however many images it keeps, the quota enforced at start,
and write errors (disk full, a path in the way) logged once, counted always."""

from __future__ import annotations

import logging
import os
import threading
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


def test_quota_deletion_holds_the_oldest_few_names_not_the_whole_day_folder(tmp_path: Path) -> None:
    """Issue 28/22: at the quota, a day folder of tens of thousands of images was listed, every name held
    and sorted, at each deletion (a sawtooth in the agent's memory). Now only the oldest few that the
    excess needs are held: the peak is a fraction of the folder's names, and the oldest still go first."""
    import sys
    import tracemalloc

    folder = tmp_path / "arch" / "l1" / "2026-11-01"
    names = [f"{i:010d}_P-{i:06d}_NG_top.jpg" for i in range(1, 10_001)]
    _fill(folder, names, 100, time.time())
    archive = Archive(ArchiveConfig(path=tmp_path / "arch", quota_mb=10, min_free_mb=0))
    archive.start()
    try:
        archive.config.quota_mb = 0.95  # 1.0 MB kept: down to 95 % of 0.95 MB, about 1,000 files go
        tracemalloc.start()
        try:
            archive._enforce_quota()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        archive.stop()
    every_name = sum(sys.getsizeof(n) + 8 for n in names)  # what a list of the whole folder holds
    assert peak < 0.4 * every_name, (peak, every_name)  # listing them all: 1.14 of it
    left = sorted(p.name for p in folder.iterdir())
    assert archive.stats.deleted_for_quota == 10_000 - len(left)
    assert left[0] == names[10_000 - len(left)]  # exactly the oldest went
    assert archive.stats.bytes_used == 100 * len(left) <= 0.95e6 * 0.95


def test_a_long_quota_pass_does_not_hold_up_writing(tmp_path: Path) -> None:
    """Issue 28/22: the quota pass ran on the writer thread; over a day folder of 27,000 images beside
    busy threads it took seconds, the queue of 64 parts filled (+18 MiB) and NG images were skipped.
    Here a pass is held open: the writer goes on writing meanwhile, and the quota holds in the end."""
    config = ArchiveConfig(path=tmp_path / "arch", quota_mb=0.1, min_free_mb=0, ok_sample_rate=0.0)
    archive = Archive(config)
    in_pass, release = threading.Event(), threading.Event()
    delete_oldest = archive._delete_oldest

    def held_pass(folder: Path, target: float):
        in_pass.set()
        release.wait(30)
        return delete_oldest(folder, target)

    archive._delete_oldest = held_pass  # type: ignore[method-assign]
    archive.start()
    try:
        seq = 0
        while not in_pass.is_set():  # write until the quota is exceeded and a pass starts
            seq += 1
            while not archive.submit(outcome(seq, "NG", IMAGE)):
                time.sleep(0.005)
            assert seq < 1000, "the quota pass never started"
        written = archive.stats.written
        for _ in range(100):  # more than the queue holds (64): a held-up writer would never take them
            seq += 1
            deadline = time.monotonic() + 30
            while not archive.submit(outcome(seq, "NG", IMAGE)):
                assert time.monotonic() < deadline, "the writer is held up by the quota pass"
                time.sleep(0.005)
        deadline = time.monotonic() + 30
        while archive.stats.written < written + 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert archive.stats.written >= written + 100 and archive.stats.deleted_for_quota == 0
    finally:
        release.set()
        archive.stop(30)
    assert archive.stats.bytes_used <= 0.1e6
    on_disk = sum(p.stat().st_size for p in (tmp_path / "arch").rglob("*") if p.is_file())
    assert on_disk == archive.stats.bytes_used


def test_images_appear_whole_and_a_stop_in_mid_write_leaves_nothing_counted(tmp_path: Path) -> None:
    """Each image is written under a hidden partial name and renamed: a reader never finds half a file
    (the console serves what it finds), the quota never picks a partial file, and one left by a stop in
    mid-write is removed at the next start instead of being counted as an image."""
    root = tmp_path / "arch"
    day = root / "l_1" / "2026-11-01"
    _fill(day, ["0000000001_P_NG_top.jpg"], 1000, time.time())
    (day / ".0000000002_P_NG_top.jpg.part").write_bytes(b"half a jpeg")
    archive = Archive(ArchiveConfig(path=root, quota_mb=10, min_free_mb=0, ok_sample_rate=0.0))
    archive.start()
    try:
        assert not (day / ".0000000002_P_NG_top.jpg.part").exists()
        assert archive.stats.bytes_used == 1000  # the partial file was never an image
        for seq in range(1, 21):
            assert archive.submit(outcome(seq, "NG", IMAGE))
    finally:
        archive.stop()
    names = [p.name for p in root.rglob("*") if p.is_file()]
    assert archive.stats.written == 20 and not [n for n in names if n.startswith(".")]
    assert archive.stats.bytes_used == sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
