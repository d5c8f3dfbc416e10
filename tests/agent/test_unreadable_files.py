"""Unreadable images in a folder source are never silent: each is logged once with file and reason,
counted in the camera status, /metrics and the terminal summary, and left out of the next laps."""

from __future__ import annotations

import logging
import shutil
import urllib.request
from pathlib import Path

import cv2
from agent_helpers import folder_line, wait_until, write_site

from edge_agent.agent_cli import format_summary
from edge_agent.sources.folder import FolderSource, FolderSourceConfig


def _folder_with_bad_files(tmp_path: Path, synthetic_images: Path) -> Path:
    folder = tmp_path / "imgs"
    shutil.copytree(synthetic_images, folder)
    (folder / "zero.png").write_bytes(b"")
    good = (folder / "part_000.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 3])
    (folder / "notes.png").write_text("not an image at all")
    return folder


def test_each_unreadable_file_is_logged_once_and_left_out_of_later_laps(
    tmp_path: Path, synthetic_images: Path, caplog
) -> None:
    folder = _folder_with_bad_files(tmp_path, synthetic_images)
    source = FolderSource(FolderSourceConfig(path=folder, mode="loop", glob=["*.png"]), "top")
    source.open()
    with caplog.at_level(logging.WARNING, logger="edge_agent.sources.folder"):
        names = [Path(source.read().source_ref).name for _ in range(6 * 3)]  # three laps of the good ones
    assert sorted(set(names)) == [f"part_{i:03d}.png" for i in range(6)] and len(names) == 18
    assert source.skipped == 3
    logged = [r.getMessage() for r in caplog.records if "skipped unreadable file" in r.getMessage()]
    assert len(logged) == 3
    assert any("zero.png" in m and "file is empty" in m for m in logged)
    assert any("notes.png" in m and "not a readable image" in m for m in logged)

    # a bad file that is rewritten with a good image is read again
    cv2.imwrite(str(folder / "notes.png"), cv2.imread(str(folder / "part_001.png")))
    later = [Path(source.read().source_ref).name for _ in range(7 * 2)]
    assert "notes.png" in later and source.skipped == 3


def test_skips_show_in_status_metrics_and_summary(
    tmp_path: Path, tiny_detect_onnx: Path, synthetic_images: Path, agent_factory
) -> None:
    folder = _folder_with_bad_files(tmp_path, synthetic_images)
    line = folder_line("l1", folder, tiny_detect_onnx)
    line["cameras"][0]["source"].update(mode="loop", glob=["*.png"])
    agent = agent_factory(write_site(tmp_path, [line]))
    agent.start()
    runtime = agent.lines["l1"]
    wait_until(lambda: runtime.counts["inspected"] >= 14)  # past two laps
    (camera,) = runtime.status()["cameras"]
    assert camera["skipped"] == 3 and camera["last_skip_error"]
    text = urllib.request.urlopen(agent.metrics_server.url + "/metrics", timeout=5).read().decode()
    assert 'edge_inspect_skipped_files_total{camera="top",line="l1"} 3.0' in text
    assert "3 unreadable files skipped" in format_summary(agent)
