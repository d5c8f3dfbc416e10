"""Make Ultralytics work with no network: no hub, no analytics, no font or weight downloads.

Call `ultralytics_offline()` before importing ultralytics (it sets environment variables that
Ultralytics reads at import) and it also pins the persisted settings after import.

What we pin and why (also in docs/training.md):
- YOLO_OFFLINE=1: Ultralytics' `is_online()` returns False, so no DNS probes and no hub checks.
- YOLO_CONFIG_DIR: settings live in a folder we own (default `~/.config/edge-inspect/ultralytics`),
  not the user's global Ultralytics settings that other tools may have switched on.
- settings sync=False (no analytics events), and every logger integration (clearml, comet, dvc, mlflow,
  raytune, wandb, tensorboard) off, so none is imported or phones home.
- Callers pass `plots=False` to train/val (plots need the Arial font, which Ultralytics downloads),
  `amp=False` on CPU (the AMP check downloads yolo11n.pt), and train from a model YAML or our own .pt.
"""

from __future__ import annotations

import os
from pathlib import Path

_OFF = {
    "sync": False,
    "clearml": False,
    "comet": False,
    "dvc": False,
    "mlflow": False,
    "raytune": False,
    "tensorboard": False,
    "wandb": False,
    "vscode_msg": False,
    "openvino_msg": False,
}


def ultralytics_offline(config_dir: str | Path | None = None) -> None:
    """Configure Ultralytics for offline use; safe to call more than once."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_VERBOSE", "False")
    if config_dir is None:
        config_dir = (
            Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "edge-inspect" / "ultralytics"
        )
    Path(config_dir).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
    from ultralytics.utils import SETTINGS

    changed = {k: v for k, v in _OFF.items() if SETTINGS.get(k) != v}
    if changed:
        SETTINGS.update(changed)
