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

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.sources.base import Frame, Source, SourceError
from edge_agent.sources.pixel_formats import convert_buffer

__all__ = ["GenicamSource", "GenicamSourceConfig", "convert_buffer"]


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
