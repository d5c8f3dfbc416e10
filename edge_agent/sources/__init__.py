"""Frame sources: folder, video file, OpenCV camera (USB/RTSP/HTTP), GenICam (optional)."""

from edge_agent.sources.base import Frame, Source, SourceError
from edge_agent.sources.registry import SOURCES, SourceConfig, build_source

__all__ = ["SOURCES", "Frame", "Source", "SourceConfig", "SourceError", "build_source"]
