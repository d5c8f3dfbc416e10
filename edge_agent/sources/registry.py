"""Source kinds by `type:`. Adding a camera kind = one new file + one entry here."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from edge_agent.sources.base import Source
from edge_agent.sources.camera import CameraSource, CameraSourceConfig
from edge_agent.sources.folder import FolderSource, FolderSourceConfig
from edge_agent.sources.genicam import GenicamSource, GenicamSourceConfig
from edge_agent.sources.gige import GigeSource, GigeSourceConfig, check_gige
from edge_agent.sources.video import VideoSource, VideoSourceConfig

SOURCES: dict[str, tuple[type, type[Source]]] = {
    "folder": (FolderSourceConfig, FolderSource),
    "video": (VideoSourceConfig, VideoSource),
    "camera": (CameraSourceConfig, CameraSource),
    "genicam": (GenicamSourceConfig, GenicamSource),
    "gige": (GigeSourceConfig, GigeSource),
}

#: `config check` reaches these kinds' devices: (key path under `source`, one-line problem) or None
SOURCE_CHECKS: dict[str, Callable[[Any], tuple[tuple[str, ...], str] | None]] = {
    "gige": check_gige,
}

SourceConfig = Annotated[
    FolderSourceConfig | VideoSourceConfig | CameraSourceConfig | GenicamSourceConfig | GigeSourceConfig,
    Field(discriminator="type"),
]


def build_source(config: SourceConfig, camera: str, stop_event: threading.Event) -> Source:
    _, cls = SOURCES[config.type]
    return cls(config, camera, stop_event)


def check_source(config: SourceConfig) -> tuple[tuple[str, ...], str] | None:
    """Reach the device a source config names (kinds in SOURCE_CHECKS); the first problem or None."""
    check = SOURCE_CHECKS.get(config.type)
    return check(config) if check else None
