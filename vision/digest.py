"""A file's SHA-256: the identity of a model file in model cards, records and manifests.

>>> import tempfile
>>> with tempfile.NamedTemporaryFile() as f:
...     _ = f.write(b"abc"); f.flush()
...     file_sha256(Path(f.name))[:16]
'ba7816bf8f01cfea'
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
