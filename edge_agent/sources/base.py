"""The source plug-in interface: where a line's frames come from (folder, video file, camera, GenICam).

A source is opened, read frame by frame and closed by its camera worker (`edge_agent.line`), which also
retries a lost source with capped exponential back-off. A source only knows how to talk to its device.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from vision.images import ImageFile, decode_image_file, file_scale


class SourceError(Exception):
    """The source cannot be opened or has been lost; the message names the device, file or URL."""


@dataclass
class Frame:
    """One image from one camera, with where it came from and when it was ready."""

    image: np.ndarray
    camera: str
    source_ref: str
    index: int
    #: time.monotonic() when the frame was decoded and ready for inspection
    t_ready: float = field(default_factory=time.monotonic)
    #: time spent reading and decoding it, in ms
    capture_ms: float = 0.0
    #: the file it was decoded from, where that holds exactly these pixels or these pixels at full size
    #: (a JPEG decoded smaller for the model): the archive keeps it as is
    file: ImageFile | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(h, w) in the camera's or file's own pixels: where boxes, zones and areas are measured."""
        return self.file.shape if self.file is not None else self.image.shape[:2]

    @property
    def scale(self) -> tuple[float, float] | None:
        """(x, y) file pixels per `image` pixel for an image decoded smaller than its file; else None."""
        return file_scale(self.image, self.file)

    def full_image(self) -> np.ndarray:
        """The pixels at the file's size: `image` itself, or the file decoded again where it was decoded
        smaller (only parts that are archived or drawn need this)."""
        if self.scale is None or self.file is None:
            return self.image
        return decode_image_file(self.file, self.source_ref)


class Source(ABC):
    """One camera's frames.

    `live` sources (cameras) produce frames on their own clock: the line keeps only the newest one.
    File sources (`live = False`) are read on demand, so nothing is skipped unless the line asks for it.
    """

    live: bool = False

    #: the model's input size (h, w), set by the line once its model is loaded, where the model allows frames
    #: to be decoded smaller (a source that can decode to fit may use it, see `read_image_file`); None: no
    fit: tuple[int, int] | None = None

    @abstractmethod
    def open(self) -> None:
        """Connect / open. Raises SourceError naming what failed."""

    @abstractmethod
    def read(self) -> Frame | None:
        """The next frame; None when the stream has ended for good (a file source read once).

        Raises SourceError when the device is lost (the worker then closes and re-opens it)."""

    @abstractmethod
    def close(self) -> None:
        """Release the device; safe to call twice."""

    def describe(self) -> str:
        """Short human description for logs and status ("folder images/*.png", "rtsp://...")."""
        return type(self).__name__

    def request_frame(self) -> None:
        """The line wants a frame and none is waiting: a camera that takes pictures on command (GigE
        software trigger) takes one now. Called from the inspector thread; never raises (a lost camera
        shows in `read`). Default: nothing, the camera runs on its own clock."""
        return None

    def stats(self) -> dict[str, float]:
        """Transport counters since the agent started (GigE Vision: packets missing, resent, incomplete
        frames ...), exported in /metrics per camera; {} for sources that have none."""
        return {}
