"""Helpers for the agent tests: write real site/line YAML files, wait for conditions."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def folder_line(name: str, images: Path, model: Path, **overrides: Any) -> dict[str, Any]:
    """A line dict: one folder camera, the given model, free-run, one permissive recipe."""
    line: dict[str, Any] = {
        "name": name,
        "cameras": [{"name": "top", "source": {"type": "folder", "path": str(images), "mode": "once"}}],
        "trigger": {"type": "free_run"},
        "model": {"path": str(model), "conf": 0.01, "threads": 1},
        "recipes": {"default": {"min_confidence": 0.01}},
    }
    line.update(overrides)
    return line


def write_site(
    root: Path,
    lines: list[dict[str, Any]],
    publishers: list[dict[str, Any]] | None = None,
    **site_overrides: Any,
) -> Path:
    """A site folder under `root`: agent.yaml + lines/<name>.yaml; free ports everywhere."""
    for line in lines:
        write_yaml(root / "lines" / f"{line['name']}.yaml", line)
    site: dict[str, Any] = {
        "site": "test-site",
        "lines": ["lines/*.yaml"],
        "journal": {"path": "data/journal.sqlite"},
        "archive": {"path": "data/archive", "ok_sample_rate": 0.0},
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": 0},
        "reload": {"enabled": False},
        "publishers": publishers or [],
    }
    site.update(site_overrides)
    return write_yaml(root / "agent.yaml", site)


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.02) -> Any:
    """Poll `condition` until it is truthy; fail the test with a clear message after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)


def copy_images(src: Path, dst: Path, count: int | None = None) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for p in sorted(src.glob("*.png"))[:count]:
        out.append(Path(shutil.copy(p, dst / p.name)))
    return out
