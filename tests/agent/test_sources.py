"""Frame sources on real files: folder (once, loop, unreadable files), video (end, loop), camera URLs."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.sources.base import SourceError
from edge_agent.sources.camera import CameraSource, CameraSourceConfig, redact
from edge_agent.sources.folder import FolderSource, FolderSourceConfig
from edge_agent.sources.video import VideoSource, VideoSourceConfig


def test_folder_once_loop_and_unreadable_files(tmp_path: Path, synthetic_images: Path) -> None:
    folder = tmp_path / "imgs"
    shutil.copytree(synthetic_images, folder)
    (folder / "part_002.png").write_bytes(b"truncated by a network hiccup")
    once = FolderSource(FolderSourceConfig(path=folder, mode="once"), "top")
    once.open()
    names = []
    while (frame := once.read()) is not None:
        names.append(Path(frame.source_ref).name)
        assert frame.image.shape == (96, 128, 3) and frame.camera == "top"
    assert names == [f"part_{i:03d}.png" for i in (0, 1, 3, 4, 5)]
    assert once.skipped == 1 and "part_002.png: not a readable image" in once.last_skip_error

    loop = FolderSource(FolderSourceConfig(path=folder, mode="loop", glob=["part_00[01].png"]), "top")
    loop.open()
    assert [Path(loop.read().source_ref).name for _ in range(5)] == ["part_000.png", "part_001.png"] * 2 + [
        "part_000.png"
    ]


def test_folder_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=f"{tmp_path / 'nope'} is not a folder"):
        FolderSource(FolderSourceConfig(path=tmp_path / "nope"), "top").open()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no files matching"):
        FolderSource(FolderSourceConfig(path=tmp_path / "empty"), "top").open()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"x")
    junk = FolderSource(FolderSourceConfig(path=tmp_path / "junk"), "top")
    junk.open()
    with pytest.raises(SourceError, match="no readable image"):
        junk.read()


def write_video(path: Path, n: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    for i in range(n):
        writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    writer.release()


def test_video_ends_or_loops(tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    write_video(clip, 3)
    once = VideoSource(VideoSourceConfig(path=clip, loop=False), "side")
    once.open()
    frames = [once.read() for _ in range(3)]
    assert [f.index for f in frames] == [1, 2, 3] and once.read() is None
    once.close()
    looped = VideoSource(VideoSourceConfig(path=clip, loop=True), "side")
    looped.open()
    assert len([looped.read() for _ in range(7)]) == 7
    looped.close()
    with pytest.raises(SourceError, match="no such file"):
        VideoSource(VideoSourceConfig(path=tmp_path / "gone.avi"), "side").open()


def test_camera_errors_hide_passwords(tmp_path: Path) -> None:
    assert redact("rtsp://viewer:s3cret@10.0.0.5:554/s1") == "rtsp://viewer:***@10.0.0.5:554/s1"
    assert redact("/dev/video0") == "/dev/video0"
    missing = CameraSource(CameraSourceConfig(device=str(tmp_path / "video9")), "top")
    with pytest.raises(SourceError, match="cannot open"):
        missing.open()
    url = CameraSource(
        CameraSourceConfig(device="rtsp://viewer:s3cret@127.0.0.1:9/none", open_timeout_s=1), "x"
    )
    assert "s3cret" not in url.describe()
