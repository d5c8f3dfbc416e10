"""GenICam pixel formats become 8-bit BGR scaled by their real bit depth (a Mono12 frame used to become
almost black: the top 8 bits of the 16-bit container kept 0-4095 as 0-15). Synthetic buffers as the
GenTL producer hands them over: one pixel per 8- or 16-bit word, little-endian, LSB-aligned."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_agent.sources.base import SourceError
from edge_agent.sources.genicam import convert_buffer
from vision.images import to_bgr8

H, W = 16, 24


def _ramp(bits: int) -> np.ndarray:
    """0 .. 2**bits - 1 across the frame (the first pixel black, the last full scale)."""
    full = (1 << bits) - 1
    values = np.linspace(0, full, H * W).round().astype(np.uint16 if bits > 8 else np.uint8)
    return values.reshape(H, W)


@pytest.mark.parametrize("bits", [8, 10, 12, 14, 16])
def test_mono_formats_use_their_real_depth(bits: int) -> None:
    ramp = _ramp(bits)
    image = convert_buffer(ramp.ravel(), W, H, f"Mono{bits}")
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert image[0, 0, 0] == 0 and image[-1, -1, 0] == 255  # full scale is white, whatever the depth
    mid = (1 << bits) // 2
    expected = mid >> (bits - 8)
    flat = convert_buffer(np.full(H * W, mid, ramp.dtype), W, H, f"Mono{bits}")
    assert int(flat[0, 0, 0]) == expected
    assert 120 <= int(image.mean()) <= 135  # a ramp averages mid-grey, not near-black


def test_mono12_from_the_raw_byte_buffer_is_read_little_endian() -> None:
    ramp = _ramp(12)
    raw = ramp.astype("<u2").view(np.uint8).ravel()  # a producer that hands over bytes
    assert np.array_equal(convert_buffer(raw, W, H, "Mono12"), convert_buffer(ramp.ravel(), W, H, "Mono12"))


@pytest.mark.parametrize(
    ("fmt", "bits"), [("BayerRG8", 8), ("BayerRG12", 12), ("BayerGB10", 10), ("BayerBG16", 16)]
)
def test_bayer_formats_scale_then_demosaic(fmt: str, bits: int) -> None:
    mosaic = np.full((H, W), (1 << bits) - 1, np.uint16 if bits > 8 else np.uint8)
    image = convert_buffer(mosaic.ravel(), W, H, fmt)
    assert image.shape == (H, W, 3) and int(image.min()) == 255  # a white scene stays white


def test_rgb_and_bgr_formats() -> None:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 200  # red
    assert tuple(convert_buffer(rgb.ravel(), W, H, "RGB8")[0, 0]) == (0, 0, 200)
    assert tuple(convert_buffer(rgb.ravel(), W, H, "BGR8")[0, 0]) == (200, 0, 0)


@pytest.mark.parametrize(
    ("fmt", "hint"), [("Mono12p", "set PixelFormat to Mono12"), ("YUV422_8", "e.g. Mono8")]
)
def test_unsupported_formats_say_what_to_set(fmt: str, hint: str) -> None:
    with pytest.raises(SourceError, match=f"pixel format {fmt} is not supported: .*{hint}"):
        convert_buffer(np.zeros(H * W, np.uint8), W, H, fmt)


def test_to_bgr8_bit_depth_and_full_range_16_bit_files() -> None:
    twelve = np.full((H, W), 4095, np.uint16)
    assert to_bgr8(twelve, bit_depth=12)[0, 0, 0] == 255
    assert to_bgr8(twelve)[0, 0, 0] == 15  # no depth given: a full-range 16-bit file, as cv2 would scale it
    assert cv2.convertScaleAbs(twelve, alpha=1 / 256)[0, 0] in (15, 16)
