"""Every pixel format the camera sources read, checked against a reference made independently of the
converter: Bayer mosaics sampled from a known colour image by the PFNC definition of each pattern,
Mono10/Mono12 words computed from known 8-bit values, RGB8 channel order. No camera needed."""

from __future__ import annotations

import doctest
import os

import numpy as np
import pytest

import edge_agent.sources.pixel_formats as pixel_formats
from edge_agent.sources.pixel_formats import PFNC_CODES, SUPPORTED_FORMATS, convert_buffer, pfnc_name

H, W = 32, 48
#: PFNC: the pattern's name reads its top-left 2x2 cell row by row
CELLS = {
    "RG": ("R", "G", "G", "B"),
    "GR": ("G", "R", "B", "G"),
    "GB": ("G", "B", "R", "G"),
    "BG": ("B", "G", "G", "R"),
}
CHANNEL = {"B": 0, "G": 1, "R": 2}


def colour_scene() -> np.ndarray:
    """BGR: four flat colour blocks (demosaicing is exact inside a flat area)."""
    scene = np.zeros((H, W, 3), np.uint8)
    scene[: H // 2, : W // 2] = (30, 100, 200)  # orange-ish: R high, B low
    scene[: H // 2, W // 2 :] = (210, 60, 20)  # blue
    scene[H // 2 :, : W // 2] = (40, 220, 90)  # green
    scene[H // 2 :, W // 2 :] = (250, 250, 250)
    return scene


def mosaic(scene: np.ndarray, pattern: str) -> np.ndarray:
    out = np.zeros(scene.shape[:2], scene.dtype)
    for (dy, dx), colour in zip([(0, 0), (0, 1), (1, 0), (1, 1)], CELLS[pattern]):
        out[dy::2, dx::2] = scene[dy::2, dx::2, CHANNEL[colour]]
    return out


def interior(image: np.ndarray) -> np.ndarray:
    """Pixels at least 2 away from the image border and from the blocks' edges."""
    keep = np.zeros(image.shape[:2], bool)
    for ys in (slice(2, H // 2 - 2), slice(H // 2 + 2, H - 2)):
        for xs in (slice(2, W // 2 - 2), slice(W // 2 + 2, W - 2)):
            keep[ys, xs] = True
    return image[keep]


@pytest.mark.parametrize("pattern", list(CELLS))
def test_bayer8_gives_the_scene_colours(pattern: str) -> None:
    scene = colour_scene()
    image = convert_buffer(mosaic(scene, pattern).ravel(), W, H, f"Bayer{pattern}8")
    assert image.shape == (H, W, 3)
    assert np.array_equal(interior(image), interior(scene))  # red stays red, blue stays blue


@pytest.mark.parametrize(("pattern", "bits"), [("RG", 12), ("GB", 10), ("BG", 16), ("GR", 12)])
def test_deeper_bayer_is_scaled_then_demosaiced(pattern: str, bits: int) -> None:
    scene = colour_scene()
    words = mosaic(scene, pattern).astype(np.uint16) << (bits - 8)  # the same scene at `bits` bits
    image = convert_buffer(words.ravel(), W, H, f"Bayer{pattern}{bits}")
    assert np.array_equal(interior(image), interior(scene))


@pytest.mark.parametrize("bits", [10, 12])
def test_mono10_and_mono12_keep_their_top_8_bits(bits: int) -> None:
    rng = np.random.default_rng(bits)
    eight = rng.integers(0, 256, (H, W), dtype=np.uint16)
    low = rng.integers(0, 1 << (bits - 8), (H, W), dtype=np.uint16)  # bits below the top 8: dropped
    words = (eight << (bits - 8)) | low
    raw = words.astype("<u2").view(np.uint8).ravel()  # as GVSP carries it: little-endian, LSB-aligned
    image = convert_buffer(raw, W, H, f"Mono{bits}")
    assert np.array_equal(image[..., 0], eight) and np.array_equal(image[..., 2], eight)


def test_rgb8_is_reordered_to_bgr() -> None:
    scene = colour_scene()
    rgb = scene[..., ::-1].copy()
    assert np.array_equal(convert_buffer(rgb.ravel(), W, H, "RGB8"), scene)
    assert np.array_equal(convert_buffer(scene.ravel(), W, H, "BGR8"), scene)


def test_pfnc_codes_are_aravis_codes() -> None:
    """Our PFNC table against Aravis' own constants (where the bindings are installed)."""
    try:
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis
    except (ImportError, ValueError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f".ci/run installs Aravis and the [gige] extra, yet: {exc}")
        pytest.skip(f"Aravis bindings unavailable: {exc} (docs/gige.md, Install)")
    names = {
        "Mono8": "MONO_8", "Mono10": "MONO_10", "Mono12": "MONO_12", "Mono14": "MONO_14",
        "Mono16": "MONO_16", "BayerRG8": "BAYER_RG_8", "BayerGR8": "BAYER_GR_8", "BayerGB8": "BAYER_GB_8",
        "BayerBG8": "BAYER_BG_8", "BayerRG12": "BAYER_RG_12", "BayerBG10": "BAYER_BG_10",
        "BayerGR16": "BAYER_GR_16", "RGB8": "RGB_8_PACKED", "BGR8": "BGR_8_PACKED",
    }  # fmt: skip
    for ours, theirs in names.items():
        assert PFNC_CODES[ours] == getattr(Aravis, f"PIXEL_FORMAT_{theirs}"), ours
    assert pfnc_name(Aravis.PIXEL_FORMAT_MONO_12_PACKED) == "Mono12Packed"
    assert set(SUPPORTED_FORMATS) == set(PFNC_CODES)


def test_docstring_examples() -> None:
    result = doctest.testmod(pixel_formats)
    assert result.attempted > 0 and result.failed == 0
