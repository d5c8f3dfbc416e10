"""An ONNX file's `metadata_props` (Ultralytics' names, imgsz, task ...) without onnx or a runtime session.

OpenVINO does not keep an ONNX file's metadata, and the `onnx` package is a training dependency, so this
reads the few protobuf fields it needs straight from the file: `ModelProto.metadata_props` (field 14) is a
repeated `StringStringEntryProto` (key = 1, value = 2). The graph (field 7, the bulk of the file) is
skipped by its length, never parsed.

Example:
    >>> read_onnx_metadata("models/demo/model.onnx")["task"]      # doctest: +SKIP
    'detect'
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vision.errors import ModelLoadError

_METADATA_PROPS = 14


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """Top-level (field number, wire type, value) of one protobuf message; length-delimited values as
    memoryview slices (no copy)."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated field")
        yield number, wire, value


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The `metadata_props` of an ONNX file as a dict (empty if it has none); `ModelLoadError` if the file
    is not a readable protobuf."""
    path = Path(path)
    try:
        data = memoryview(path.read_bytes())
        meta: dict[str, str] = {}
        for number, wire, value in _fields(data):
            if number != _METADATA_PROPS or wire != 2:
                continue
            entry = {n: bytes(v).decode("utf-8") for n, w, v in _fields(value) if w == 2 and n in (1, 2)}
            if 1 in entry:
                meta[entry[1]] = entry.get(2, "")
        return meta
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: not a readable ONNX file ({exc})") from exc
