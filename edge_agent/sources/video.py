"""`video` source: frames of a video file, once or in a loop, optionally paced to the file's frame rate.

Example line YAML:

    cameras:
      - name: side
        source: {type: video, path: recordings/line2.mp4, loop: true}
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.sources.base import Frame, Source, SourceError


class VideoSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["video"] = "video"
    path: Path = Field(description="video file (relative to the line file)")
    loop: bool = Field(True, description="start over at the end; false: the camera ends with the file")
    realtime: bool = Field(False, description="pace frames at the file's fps, like a live camera")


class VideoSource(Source):
    def __init__(self, config: VideoSourceConfig, camera: str, stop_event: threading.Event | None = None):
        import cv2

        self._cv2 = cv2
        self.config = config
        self.camera = camera
        self.live = config.realtime
        self._stop = stop_event or threading.Event()
        self._cap: cv2.VideoCapture | None = None
        self._index = 0
        self._period = 0.0
        self._next_t = 0.0

    def describe(self) -> str:
        return f"video {self.config.path}"

    def open(self) -> None:
        if not self.config.path.is_file():
            raise SourceError(f"video source: {self.config.path}: no such file")
        cap = self._cv2.VideoCapture(str(self.config.path))
        if not cap.isOpened():
            raise SourceError(f"video source: {self.config.path}: cannot be decoded by OpenCV")
        fps = cap.get(self._cv2.CAP_PROP_FPS) or 0.0
        self._period = 1.0 / fps if self.config.realtime and fps > 0 else 0.0
        self._next_t = time.monotonic()
        self._cap = cap

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"video source: {self.config.path} is not open")
        t0 = time.perf_counter()
        ok, image = self._cap.read()
        if not ok:
            if not self.config.loop:
                return None
            self._cap.release()
            self.open()
            ok, image = self._cap.read()
            if not ok:
                raise SourceError(f"video source: {self.config.path}: no frame could be decoded")
        capture_ms = (time.perf_counter() - t0) * 1000
        if self._period:
            self._next_t += self._period
            self._stop.wait(max(0.0, self._next_t - time.monotonic()))
        self._index += 1
        ref = f"{self.config.path}#{self._index}"
        return Frame(image, self.camera, ref, self._index, capture_ms=capture_ms)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
