"""Machine-vision pixel formats (GenICam PFNC) as 8-bit BGR: one conversion for every camera source.

Both the `genicam` source (harvesters) and the `gige` source (Aravis) hand over a raw buffer plus its
pixel format; `convert_buffer` turns it into the 8-bit BGR image the rest of the agent works with.

Bayer names follow PFNC, where `BayerRG` means the top-left 2x2 cell is R G / G B. OpenCV names its
Bayer conversions after the second row's second and third pixels, so PFNC `BayerRG` is OpenCV's
`COLOR_BayerBG2BGR` (and so on for each pattern): using OpenCV's constant of the same name swaps red and
blue. tests/agent/test_gige.py checks every pattern against a mosaic made from a known colour image.

Example:
    >>> import numpy as np
    >>> mono12 = np.full(16 * 16, 4095, np.uint16)            # 12 significant bits, full scale
    >>> convert_buffer(mono12, 16, 16, "Mono12")[0, 0].tolist()  # white, not the container's 15
    [255, 255, 255]
    >>> pfnc_name(0x01080009)
    'BayerRG8'
"""

from __future__ import annotations

import re

import numpy as np

from edge_agent.sources.base import SourceError

#: PFNC Bayer pattern -> the OpenCV conversion that demosaics it (see the module docstring for why the
#: names differ)
_BAYER = {
    "BayerRG": "COLOR_BayerBG2BGR",
    "BayerGR": "COLOR_BayerGB2BGR",
    "BayerBG": "COLOR_BayerRG2BGR",
    "BayerGB": "COLOR_BayerGR2BGR",
}
#: significant bits per pixel format suffix; unpacked formats only (one pixel per 8- or 16-bit word)
_DEPTHS = {"8": 8, "10": 10, "12": 12, "14": 14, "16": 16}

#: PFNC codes of the formats `convert_buffer` reads (what a GigE Vision buffer's leader carries)
PFNC_CODES = {
    "Mono8": 0x01080001,
    "Mono10": 0x01100003,
    "Mono12": 0x01100005,
    "Mono14": 0x01100025,
    "Mono16": 0x01100007,
    "BayerGR8": 0x01080008,
    "BayerRG8": 0x01080009,
    "BayerGB8": 0x0108000A,
    "BayerBG8": 0x0108000B,
    "BayerGR10": 0x0110000C,
    "BayerRG10": 0x0110000D,
    "BayerGB10": 0x0110000E,
    "BayerBG10": 0x0110000F,
    "BayerGR12": 0x01100010,
    "BayerRG12": 0x01100011,
    "BayerGB12": 0x01100012,
    "BayerBG12": 0x01100013,
    "BayerGR16": 0x0110002E,
    "BayerRG16": 0x0110002F,
    "BayerGB16": 0x01100030,
    "BayerBG16": 0x01100031,
    "RGB8": 0x02180014,
    "BGR8": 0x02180015,
}
#: a few formats that cameras offer and `convert_buffer` refuses, named so the error says which it was
_OTHER_CODES = {
    "Mono10Packed": 0x010C0004,
    "Mono12Packed": 0x010C0006,
    "Mono10p": 0x010A0046,
    "Mono12p": 0x010C0047,
    "YUV422_8": 0x02100032,
    "YUV422_8_UYVY": 0x0210001F,
}
_NAMES = {code: name for name, code in {**_OTHER_CODES, **PFNC_CODES}.items()}

#: the pixel formats `convert_buffer` turns into BGR8 (camera setting names)
SUPPORTED_FORMATS = tuple(PFNC_CODES)


def pfnc_name(code: int) -> str:
    """The PFNC name of a pixel format code, or its hex code when it is not one we know."""
    return _NAMES.get(int(code), f"0x{int(code):08X}")


def convert_buffer(data: np.ndarray, width: int, height: int, pixel_format: str) -> np.ndarray:
    """A camera buffer (Mono8/10/12/14/16, Bayer**8/10/12/16, RGB8, BGR8) as 8-bit BGR, scaled by the
    pixel format's real bit depth (a Mono12 4095 is white, not the 15 of the 16-bit container's top bits).

    Packed formats (Mono12p, Mono10Packed, ...) are refused with the setting to change."""
    import cv2

    from vision.images import scale_to_8bit, to_bgr8

    fmt = pixel_format
    if fmt in ("RGB8", "RGB8Packed"):
        return cv2.cvtColor(data.reshape(height, width, 3), cv2.COLOR_RGB2BGR)
    if fmt in ("BGR8", "BGR8Packed"):
        return np.ascontiguousarray(data.reshape(height, width, 3))
    base = next((b for b in ("Mono", *_BAYER) if fmt.startswith(b)), None)
    rest = fmt[len(base) :] if base else ""
    depth = _DEPTHS.get(rest)
    if base is None or depth is None:
        bits = re.match(r"\d+", rest)
        if base and bits and bits.group(0) in _DEPTHS:  # Mono12p, Mono10Packed: bits packed across bytes
            hint = f"set PixelFormat to {base}{bits.group(0)} (one pixel per 16-bit word)"
        else:
            hint = "set PixelFormat, e.g. Mono8, Mono12, BayerRG8 or RGB8"
        raise SourceError(f"pixel format {fmt} is not supported: {hint}")
    words = data.view(np.uint16) if depth > 8 and data.dtype == np.uint8 else data
    plane = scale_to_8bit(words.reshape(height, width), depth)
    if base == "Mono":
        return to_bgr8(plane, source=f"camera {fmt}")
    return cv2.cvtColor(plane, getattr(cv2, _BAYER[base]))
