"""`camera` source: an OpenCV capture device: a USB/V4L2 index or device path, or an RTSP/HTTP URL.

Live: frames arrive on the camera's clock and the line keeps the newest one. A read failure means the
camera is lost; the line's camera worker re-opens it with capped exponential back-off.

Example line YAML:

    cameras:
      - name: top
        source: {type: camera, device: 0, width: 1920, height: 1080, fps: 30}
      - name: gate
        source: {type: camera, device: "rtsp://${CAM_USER}:${CAM_PASS}@10.0.0.21/stream1"}
      - name: old-ipcam                  # speaks RTP over UDP only
        source: {type: camera, device: "rtsp://10.0.0.22/live", transport: udp, open_timeout_s: 5}
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.sources.base import Frame, Source, SourceError

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


#: OpenCV's FFmpeg backend reads its options from this variable at each open; the lock makes setting it
#: for one open safe while other cameras open at the same time
_FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_FFMPEG_ENV_LOCK = threading.Lock()


def ffmpeg_capture_options(transport: str | None, existing: str | None = None) -> str | None:
    """`OPENCV_FFMPEG_CAPTURE_OPTIONS` for an RTSP open: the chosen `rtsp_transport` over whatever the
    environment already sets (`key;value|key;value`). None: leave the variable alone."""
    if transport is None:
        return existing
    options = [o for o in (existing or "").split("|") if o and not o.startswith("rtsp_transport;")]
    return "|".join([*options, f"rtsp_transport;{transport}"])


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
    transport: Literal["tcp", "udp", "udp_multicast", "http"] | None = Field(
        None,
        description="RTSP: how RTP travels (default: OpenCV's, TCP); udp for cameras that only speak UDP",
    )
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
        if params and self.config.transport is not None and str(device).lower().startswith("rtsp"):
            with _FFMPEG_ENV_LOCK:  # the variable is read during this open only
                before = os.environ.get(_FFMPEG_OPTIONS_ENV)
                os.environ[_FFMPEG_OPTIONS_ENV] = ffmpeg_capture_options(self.config.transport, before) or ""
                try:
                    cap = cv2.VideoCapture(device, self._backend(), params)
                finally:
                    if before is None:
                        os.environ.pop(_FFMPEG_OPTIONS_ENV, None)
                    else:
                        os.environ[_FFMPEG_OPTIONS_ENV] = before
        elif params:
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
