"""Overlapping tile windows for finding small defects on large images.

Example:
    >>> tile_windows((100, 200), (1, 2), overlap=0.2)
    [(0, 0, 111, 100), (89, 0, 200, 100)]
"""

from __future__ import annotations


def _spans(length: int, n: int, overlap: float) -> list[tuple[int, int]]:
    if n <= 1:
        return [(0, length)]
    # n tiles of size s with overlap o*s between neighbours cover: s * (n - (n - 1) * o) = length
    size = round(length / (n - (n - 1) * overlap))
    size = min(max(size, 1), length)
    step = (length - size) / (n - 1)
    return [(round(i * step), round(i * step) + size) for i in range(n)]


def tile_windows(
    shape: tuple[int, int], grid: tuple[int, int], overlap: float = 0.2
) -> list[tuple[int, int, int, int]]:
    """(x1, y1, x2, y2) windows of a rows × cols grid over an image of `shape` (h, w)."""
    if not 0 <= overlap < 1:
        raise ValueError(f"tile overlap must be in [0, 1), got {overlap}")
    rows, cols = grid
    if rows < 1 or cols < 1:
        raise ValueError(f"tile grid must be at least 1x1, got {rows}x{cols}")
    h, w = shape
    return [(x1, y1, x2, y2) for y1, y2 in _spans(h, rows, overlap) for x1, x2 in _spans(w, cols, overlap)]
