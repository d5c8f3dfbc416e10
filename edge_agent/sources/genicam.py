"""`genicam` source: a GigE Vision / USB3 Vision camera through a GenTL producer, using `harvesters`.

Optional extra: `pip install edge-inspect[genicam]` and a GenTL producer (.cti) from the camera vendor
(or e.g. the open-source one of Aravis/MATRIX VISION). Without `harvesters` the line reports a clear error.

Example line YAML:

    cameras:
      - name: top
        source:
          type: genicam
          cti: /opt/mvIMPACT_Acquire/lib/x86_64/mvGenTLProducer.cti
          serial_number: "FF008343"
          features: {ExposureTime: 3000, Gain: 0}
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.sources.base import Frame, Source, SourceError

# GenICam (PFNC) Bayer pattern -> OpenCV conversion to BGR
_BAYER = {
    "BayerRG": "COLOR_BayerRG2BGR",
    "BayerGR": "COLOR_BayerGR2BGR",
    "BayerBG": "COLOR_BayerBG2BGR",
    "BayerGB": "COLOR_BayerGB2BGR",
}
#: significant bits per pixel format suffix; unpacked formats only (one pixel per 8- or 16-bit word)
_DEPTHS = {"8": 8, "10": 10, "12": 12, "14": 14, "16": 16}


def convert_buffer(data: np.ndarray, width: int, height: int, pixel_format: str) -> np.ndarray:
    """A GenICam buffer (Mono8/10/12/14/16, Bayer**8/10/12/16, RGB8, BGR8) as 8-bit BGR, scaled by the
    pixel format's real bit depth (a Mono12 4095 is white, not the 15 of the 16-bit container's top bits).

    Packed formats (Mono12p, Mono10Packed, ...) are refused with the setting to change."""
    import cv2

    from vision.images import scale_to_8bit, to_bgr8

    fmt = pixel_format
    if fmt in ("RGB8", "RGB8Packed"):
        return cv2.cvtColor(data.reshape(height, width, 3), cv2.COLOR_RGB2BGR)
    if fmt in ("BGR8", "BGR8Packed"):
        return np.ascontiguousarray(data.reshape(height, width, 3))
    base = next((b for b in ("Mono", *_BAYER) if fmt.startswith(b)), None)
    rest = fmt[len(base) :] if base else ""
    depth = _DEPTHS.get(rest)
    if base is None or depth is None:
        bits = re.match(r"\d+", rest)
        if base and bits and bits.group(0) in _DEPTHS:  # Mono12p, Mono10Packed: bits packed across bytes
            hint = f"set PixelFormat to {base}{bits.group(0)} (one pixel per 16-bit word)"
        else:
            hint = "set PixelFormat, e.g. Mono8, Mono12, BayerRG8 or RGB8"
        raise SourceError(f"pixel format {fmt} is not supported: {hint}")
    words = data.view(np.uint16) if depth > 8 and data.dtype == np.uint8 else data
    plane = scale_to_8bit(words.reshape(height, width), depth)
    if base == "Mono":
        return to_bgr8(plane, source=f"genicam {fmt}")
    return cv2.cvtColor(plane, getattr(cv2, _BAYER[base]))


class GenicamSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["genicam"] = "genicam"
    cti: Path = Field(description="GenTL producer file (.cti)")
    serial_number: str | None = Field(None, description="pick the camera by serial number (default: first)")
    features: dict[str, Any] = Field(default_factory=dict, description="GenICam node values set on open")
    fetch_timeout_s: float = Field(3.0, gt=0, description="no frame for this long = camera lost")


class GenicamSource(Source):
    live = True

    def __init__(self, config: GenicamSourceConfig, camera: str, stop_event: object = None):
        self.config = config
        self.camera = camera
        self._harvester: Any = None
        self._acquirer: Any = None
        self._index = 0

    def describe(self) -> str:
        return f"genicam {self.config.serial_number or 'first camera'} via {self.config.cti.name}"

    def open(self) -> None:
        try:
            from harvesters.core import Harvester
        except ImportError as exc:
            raise SourceError(
                "genicam source needs the optional `harvesters` package: pip install 'edge-inspect[genicam]'"
            ) from exc
        if not self.config.cti.is_file():
            raise SourceError(f"genicam source: GenTL producer {self.config.cti}: no such file")
        harvester = Harvester()
        try:
            harvester.add_file(str(self.config.cti))
            harvester.update()
            key: Any = {"serial_number": self.config.serial_number} if self.config.serial_number else 0
            acquirer = harvester.create(key)
            node_map = acquirer.remote_device.node_map
            for name, value in self.config.features.items():
                getattr(node_map, name).value = value
            acquirer.start()
        except Exception as exc:  # harvesters/genicam raise many types; all mean "cannot open"
            harvester.reset()
            raise SourceError(f"genicam {self.describe()}: cannot open: {exc}") from exc
        self._harvester, self._acquirer = harvester, acquirer

    def read(self) -> Frame | None:
        if self._acquirer is None:
            raise SourceError(f"{self.describe()}: not open")
        t0 = time.perf_counter()
        try:
            with self._acquirer.fetch(timeout=self.config.fetch_timeout_s) as buffer:
                component = buffer.payload.components[0]
                h, w = int(component.height), int(component.width)
                fmt = str(component.data_format)
                data = np.array(component.data, copy=True)  # the buffer goes back to the driver on exit
        except Exception as exc:
            raise SourceError(f"{self.describe()}: no frame: {exc}") from exc
        try:
            image = convert_buffer(data, w, h, fmt)
        except (SourceError, ValueError) as exc:  # ValueError: the buffer does not hold w x h pixels
            raise SourceError(f"{self.describe()}: {exc}") from exc
        self._index += 1
        ref = f"genicam:{self.config.serial_number or 0}#{self._index}"
        return Frame(image, self.camera, ref, self._index, capture_ms=(time.perf_counter() - t0) * 1000)

    def close(self) -> None:
        if self._acquirer is not None:
            try:
                self._acquirer.stop()
                self._acquirer.destroy()
            finally:
                self._acquirer = None
        if self._harvester is not None:
            self._harvester.reset()
            self._harvester = None
