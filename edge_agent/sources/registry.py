"""Source kinds by `type:`. Adding a camera kind = one new file + one entry here."""

from __future__ import annotations

import threading
from typing import Annotated

from pydantic import Field

from edge_agent.sources.base import Source
from edge_agent.sources.camera import CameraSource, CameraSourceConfig
from edge_agent.sources.folder import FolderSource, FolderSourceConfig
from edge_agent.sources.genicam import GenicamSource, GenicamSourceConfig
from edge_agent.sources.video import VideoSource, VideoSourceConfig

SOURCES: dict[str, tuple[type, type[Source]]] = {
    "folder": (FolderSourceConfig, FolderSource),
    "video": (VideoSourceConfig, VideoSource),
    "camera": (CameraSourceConfig, CameraSource),
    "genicam": (GenicamSourceConfig, GenicamSource),
}

SourceConfig = Annotated[
    FolderSourceConfig | VideoSourceConfig | CameraSourceConfig | GenicamSourceConfig,
    Field(discriminator="type"),
]


def build_source(config: SourceConfig, camera: str, stop_event: threading.Event) -> Source:
    _, cls = SOURCES[config.type]
    return cls(config, camera, stop_event)
