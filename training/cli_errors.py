"""How the training commands report bad input: one readable line and exit code 2, no traceback.

Its own module so every training CLI module (`training.cli`, `training.runtime_cli`,
`training.anomaly.cli`) uses it without importing another's commands.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer


@contextmanager
def plain_errors() -> Iterator[None]:
    """Turn our input errors into one readable line and exit code 2 (no traceback for users)."""
    from training.errors import TrainingInputError
    from vision.errors import VisionError

    try:
        yield
    except (TrainingInputError, VisionError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
