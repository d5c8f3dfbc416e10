"""`folder` source: image files matching glob patterns, read once, in a loop, or watched for new files.

Example line YAML:

    cameras:
      - name: top
        source: {type: folder, path: ../../images, glob: ["*.png", "*.jpg"], mode: loop}
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.sources.base import Frame, Source, SourceError

log = logging.getLogger(__name__)


class FolderSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["folder"] = "folder"
    path: Path = Field(description="folder of images (relative to the line file)")
    glob: list[str] = Field(default_factory=lambda: ["*.png", "*.jpg", "*.jpeg", "*.bmp", "*.tif", "*.tiff"])
    recursive: bool = False
    mode: Literal["once", "loop", "watch"] = Field(
        "loop", description="once: each file once then end; loop: start over; watch: wait for new files"
    )
    poll_s: float = Field(0.2, gt=0, description="watch mode: how often to look for new files")
    settle_s: float = Field(0.2, ge=0, description="watch mode: a file must be unchanged this long")
    include_existing: bool = Field(
        False, description="watch mode: also inspect the files already there when the agent starts"
    )
    scaled_decode: bool = Field(
        False,
        description="decode a colour JPEG at 1/2, 1/4 or 1/8 size in the JPEG decoder itself where the"
        " model's input is at least that much smaller (about half the decoding work; boxes, zones and"
        " the archive stay in the file's pixels). Detection models without tiles only",
    )


class FolderSource(Source):
    live = False

    def __init__(self, config: FolderSourceConfig, camera: str, stop_event: threading.Event | None = None):
        self.config = config
        self.camera = camera
        self._stop = stop_event or threading.Event()
        self._files: list[Path] = []
        self._pos = 0
        self._seen: set[Path] = set()
        self._watch_started = False
        self._index = 0
        #: unreadable files skipped so far, and the last such error (status, metrics, logs)
        self.skipped = 0
        self.last_skip_error: str | None = None
        # unreadable file -> its (mtime, size) when it failed: left out of later laps until it changes
        self._unreadable: dict[Path, tuple[float, int] | None] = {}

    def describe(self) -> str:
        return f"folder {self.config.path} {','.join(self.config.glob)} ({self.config.mode})"

    def _list(self) -> list[Path]:
        found: set[Path] = set()
        for pattern in self.config.glob:
            it = self.config.path.rglob(pattern) if self.config.recursive else self.config.path.glob(pattern)
            found.update(p for p in it if p.is_file())
        return sorted(p for p in found if not self._still_unreadable(p))

    def _still_unreadable(self, path: Path) -> bool:
        """A file that failed before and has not changed since (a rewritten file gets another try)."""
        if path not in self._unreadable:
            return False
        if _signature(path) == self._unreadable[path]:
            return True
        del self._unreadable[path]
        return False

    def _skip(self, path: Path, reason: str) -> None:
        """Count an unreadable file, log it once with the reason, and keep it out of the next laps."""
        self.skipped += 1
        self.last_skip_error = reason
        self._unreadable[path] = _signature(path)
        log.warning("%s: skipped unreadable file %s: %s", self.camera, path, reason)

    def open(self) -> None:
        if not self.config.path.is_dir():
            raise SourceError(f"folder source: {self.config.path} is not a folder")
        self._files = [] if self.config.mode == "watch" else self._list()
        if self.config.mode == "watch":
            if not self._watch_started:
                # files there before the start were handled by someone else (or an earlier run)
                self._seen = set() if self.config.include_existing else set(self._list())
                self._watch_started = True
            # on a re-open after a loss, `_seen` is kept: nothing is inspected twice
        elif not self._files:
            raise SourceError(f"folder source: no files matching {self.config.glob} in {self.config.path}")
        self._pos = 0

    def _next_watched(self) -> Path | None:
        while not self._stop.is_set():
            now = time.time()
            for p in self._list():
                if p in self._seen:
                    continue
                try:
                    if now - p.stat().st_mtime < self.config.settle_s:
                        continue  # still being written
                except OSError:
                    continue
                self._seen.add(p)
                return p
            self._stop.wait(self.config.poll_s)
        return None

    def read(self) -> Frame | None:
        from vision import ImageError
        from vision.images import read_image_file

        consecutive_skips = 0
        while True:
            if self.config.mode == "watch":
                path = self._next_watched()
                if path is None:
                    return None
            else:
                if self._pos >= len(self._files):
                    if self.config.mode == "once":
                        return None
                    self._files = self._list() or self._files  # pick up added/removed files each lap
                    self._pos = 0
                path = self._files[self._pos]
                self._pos += 1
            t0 = time.perf_counter()
            try:
                fit = self.fit if self.config.scaled_decode else None
                image, file = read_image_file(path, fit)
            except ImageError as exc:
                if not path.exists() and not self.config.path.is_dir():
                    raise SourceError(f"folder source: {self.config.path} disappeared") from exc
                # one unreadable file must not stop the line: skip it (logged once, counted)
                self._skip(path, str(exc))
                consecutive_skips += 1
                if self.config.mode != "watch" and consecutive_skips >= max(1, len(self._files)):
                    raise SourceError(f"folder source: no readable image in {self.config.path}") from exc
                continue
            self._index += 1
            return Frame(
                image=image,
                camera=self.camera,
                source_ref=os.fspath(path),
                index=self._index,
                capture_ms=(time.perf_counter() - t0) * 1000,
                file=file,
            )

    def close(self) -> None:
        self._files = []


def _signature(path: Path) -> tuple[float, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime, st.st_size)
