"""`camera` source: an OpenCV capture device: a USB/V4L2 index or device path, or an RTSP/HTTP URL.

Live: frames arrive on the camera's clock and the line keeps the newest one. A read failure means the
camera is lost; the line's camera worker re-opens it with capped exponential back-off.

Example line YAML:

    cameras:
      - name: top
        source: {type: camera, device: 0, width: 1920, height: 1080, fps: 30}
      - name: gate
        source: {type: camera, device: "rtsp://${CAM_USER}:${CAM_PASS}@10.0.0.21/stream1"}
"""

from __future__ import annotations

import re
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.sources.base import Frame, Source, SourceError

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def redact(device: str) -> str:
    """Hide a password in a URL before it reaches logs or status."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", device)


class CameraSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["camera"] = "camera"
    device: int | str = Field(description="device index (0), device path (/dev/video0) or stream URL")
    backend: Literal["auto", "v4l2", "ffmpeg", "gstreamer", "dshow", "msmf"] = "auto"
    width: int | None = Field(None, gt=0)
    height: int | None = Field(None, gt=0)
    fps: float | None = Field(None, gt=0)
    fourcc: str | None = Field(None, min_length=4, max_length=4, description="e.g. MJPG for USB cameras")
    open_timeout_s: float = Field(10.0, gt=0, description="RTSP/HTTP: give up opening after this long")
    read_timeout_s: float = Field(5.0, gt=0, description="RTSP/HTTP: a read blocked this long = lost")


class CameraSource(Source):
    live = True

    def __init__(self, config: CameraSourceConfig, camera: str, stop_event: object = None):
        import cv2

        self._cv2 = cv2
        self.config = config
        self.camera = camera
        self._cap: cv2.VideoCapture | None = None
        self._index = 0

    def describe(self) -> str:
        return f"camera {redact(str(self.config.device))}"

    def _backend(self) -> int:
        cv2 = self._cv2
        return {
            "auto": cv2.CAP_ANY,
            "v4l2": cv2.CAP_V4L2,
            "ffmpeg": cv2.CAP_FFMPEG,
            "gstreamer": cv2.CAP_GSTREAMER,
            "dshow": cv2.CAP_DSHOW,
            "msmf": cv2.CAP_MSMF,
        }[self.config.backend]

    def open(self) -> None:
        cv2 = self._cv2
        device = self.config.device
        params: list[int] = []
        if isinstance(device, str) and _URL.match(device):
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                int(self.config.open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                int(self.config.read_timeout_s * 1000),
            ]
        elif isinstance(device, str) and device.isdigit():
            device = int(device)
        if params:
            cap = cv2.VideoCapture(device, self._backend(), params)
        else:
            cap = cv2.VideoCapture(device, self._backend())
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"camera {redact(str(self.config.device))}: cannot open")
        if self.config.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.config.fourcc))
        if self.config.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.width)
        if self.config.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.height)
        if self.config.fps:
            cap.set(cv2.CAP_PROP_FPS, self.config.fps)
        self._cap = cap

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"camera {redact(str(self.config.device))}: not open")
        t0 = time.perf_counter()
        ok, image = self._cap.read()
        if not ok or image is None:
            raise SourceError(f"camera {redact(str(self.config.device))}: no frame (disconnected?)")
        self._index += 1
        return Frame(
            image=image,
            camera=self.camera,
            source_ref=f"{redact(str(self.config.device))}#{self._index}",
            index=self._index,
            capture_ms=(time.perf_counter() - t0) * 1000,
        )

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
