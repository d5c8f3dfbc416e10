"""Reading images and normalising them to 8-bit BGR, the layout every model here expects.

Example:
    >>> import numpy as np
    >>> to_bgr8(np.zeros((40, 50), np.uint16)).shape
    (40, 50, 3)
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from vision.errors import ImageError

#: smaller images carry no inspectable detail; they are rejected with a clear error
MIN_IMAGE_SIDE = 8


def scale_to_8bit(image: np.ndarray, bit_depth: int) -> np.ndarray:
    """Pixels of `bit_depth` significant bits (Mono10/12/14 in a 16-bit container, LSB-aligned) to 8 bits.

    Keeps the top 8 of the *real* bits: a 12-bit 4095 becomes 255 (keeping the top 8 bits of the 16-bit
    container instead made 0–4095 into 0–15, an almost black frame). Values above the depth saturate.
    """
    if not 8 <= bit_depth <= 16:
        raise ImageError(f"bit depth {bit_depth} is not in 8..16")
    if bit_depth == 8:
        return np.minimum(image, 255).astype(np.uint8)
    return np.minimum(np.right_shift(image, bit_depth - 8), 255).astype(np.uint8)


def to_bgr8(
    image: np.ndarray, *, rgb: bool = False, source: str = "image", bit_depth: int | None = None
) -> np.ndarray:
    """Convert grey, BGR/RGB, BGRA/RGBA, 16-bit or float images to contiguous 8-bit BGR.

    `rgb=True` says the colour channels arrive in RGB(A) order (e.g. from a GenICam camera).
    `bit_depth` says how many bits of a 16-bit image are used (10, 12, 14: camera pixel formats); without
    it a 16-bit image is taken as full-range (16-bit PNG/TIFF files).
    """
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{source}: expected a numpy array, got {type(image).__name__}")
    if image.size == 0 or image.ndim not in (2, 3):
        raise ImageError(f"{source}: empty image or unsupported shape {image.shape}")
    h, w = image.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise ImageError(f"{source}: image is {w}x{h} px, smaller than the {MIN_IMAGE_SIDE} px minimum")
    if image.dtype == np.uint16:
        image = scale_to_8bit(image, bit_depth or 16)  # full range: the top 8 bits, as convertScaleAbs(1/256)
    elif image.dtype in (np.float32, np.float64):
        scale = 255.0 if float(np.nanmax(image)) <= 1.0 else 1.0
        image = np.clip(np.nan_to_num(image) * scale, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"{source}: unsupported pixel type {image.dtype}")
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(h, w), cv2.COLOR_GRAY2BGR)
    channels = image.shape[2]
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2BGR if rgb else cv2.COLOR_BGRA2BGR)
    if channels != 3:
        raise ImageError(f"{source}: {channels} channels; expected 1, 3 or 4")
    if rgb:
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return np.ascontiguousarray(image)


class ImageFile(NamedTuple):
    """An image file's bytes, format (".jpg" or ".png") and pixel size (h, w), kept when they hold exactly the
    decoded pixels, or those pixels at full size for a JPEG decoded smaller (`read_image_file(fit=...)`)."""

    data: bytes
    ext: str
    shape: tuple[int, int]


#: JPEG start-of-frame markers (baseline, extended, progressive, lossless...): they carry the image size
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: OpenCV's flags for libjpeg's DCT-domain scaling, by reduction
_REDUCED_COLOR = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def jpeg_header(data: bytes | memoryview) -> tuple[int, int, int] | None:
    """(height, width, colour components) from a JPEG's start-of-frame segment; None if there is none
    before the scan data (not a JPEG, or a damaged one: the decoder then says what is wrong). `data` may
    be a memoryview of the file's bytes: nothing is copied.

    >>> import cv2, numpy as np
    >>> jpeg_header(cv2.imencode(".jpg", np.zeros((48, 64, 3), np.uint8))[1].tobytes())
    (48, 64, 3)
    """
    i, n = 2, len(data)
    if data[:2] != b"\xff\xd8":
        return None
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _JPEG_SOF:
            if i + 10 > n:
                return None
            return (
                int.from_bytes(data[i + 5 : i + 7], "big"),
                int.from_bytes(data[i + 7 : i + 9], "big"),
                data[i + 9],
            )
        i += 2 + length
    return None


def dct_reduction(shape: tuple[int, int], fit: tuple[int, int]) -> int:
    """The largest JPEG DCT scale-down (8, 4, 2, else 1) after which an image of `shape` (h, w) is still at
    least as large as its letterbox into `fit` (h, w): the model's resize then only ever shrinks it.

    >>> dct_reduction((640, 640), (320, 320)), dct_reduction((1080, 1920), (640, 640))
    (2, 2)
    >>> dct_reduction((480, 640), (640, 640)), dct_reduction((2048, 2448), (320, 320))
    (1, 4)
    """
    r = min(fit[0] / shape[0], fit[1] / shape[1])
    return next((f for f in (8, 4, 2) if f * r <= 1), 1)


def _format_of(data: np.ndarray) -> str | None:
    head = data[:8].tobytes()
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    return None


def read_image_file(
    path: str | Path, fit: tuple[int, int] | None = None
) -> tuple[np.ndarray, ImageFile | None]:
    """`read_image`, plus the file itself when it holds exactly these pixels: an 8-bit colour JPEG or PNG
    with no EXIF block (a viewer would turn the picture by its orientation tag; the model saw it unturned).

    An archive can then keep the file as it came instead of encoding the pixels again: no CPU spent on a
    second JPEG encoding, and no second generation of JPEG loss. Raises `ImageError` naming the path.

    `fit` (h, w), a model's input size: a colour JPEG (no EXIF) much larger than it is decoded at 1/2, 1/4
    or 1/8 size by the JPEG decoder itself (`dct_reduction`), which does about half the work of a full
    decode and leaves the model's resize less to do. The image is then smaller than `file.shape`, the
    file's own size, in which boxes and zones are measured.
    """
    path = Path(path)
    data = _file_bytes(path)
    header = jpeg_header(memoryview(data)) if fit is not None else None
    if header is not None and header[2] == 3 and not _has_exif(data, ".jpg"):
        factor = dct_reduction(header[:2], fit)  # type: ignore[arg-type]
        if factor > 1:
            reduced = _decode(data, path, _REDUCED_COLOR[factor])[0]
            return reduced, ImageFile(data.tobytes(), ".jpg", header[:2])
    image, decoded = _decode(data, path)
    ext = _format_of(data)
    # `to_bgr8` hands back the decoded array itself when it needed no conversion (8-bit, 3 channels, BGR)
    if image is not decoded or ext is None or _has_exif(data, ext):
        return image, None
    return image, ImageFile(data.tobytes(), ext, image.shape[:2])


def file_scale(image: np.ndarray, file: ImageFile | None) -> tuple[float, float] | None:
    """(x, y) file pixels per `image` pixel for an image decoded smaller than its `file`
    (`read_image_file(path, fit)`), else None: what maps its boxes back to the file's pixels.

    >>> file_scale(np.zeros((240, 320, 3), np.uint8), ImageFile(b"", ".jpg", (480, 640)))
    (2.0, 2.0)
    """
    h, w = image.shape[:2]
    if file is None or file.shape == (h, w):
        return None
    return (file.shape[1] / w, file.shape[0] / h)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as 8-bit BGR. Raises `ImageError` naming the path on any problem."""
    path = Path(path)
    return _decode(_file_bytes(path), path)[0]


def decode_image_file(file: ImageFile, source: str = "image") -> np.ndarray:
    """An `ImageFile`'s pixels at full size, as 8-bit BGR (e.g. for a frame that was decoded smaller)."""
    return _decode(np.frombuffer(file.data, np.uint8), source)[0]


def _file_bytes(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode: works with non-ASCII paths too
    if data.size == 0:
        raise ImageError(f"{path}: file is empty")
    return data


def _decode(
    data: np.ndarray, source: str | Path, flags: int = cv2.IMREAD_UNCHANGED
) -> tuple[np.ndarray, np.ndarray]:
    """(8-bit BGR image, the decoder's own array); `flags` e.g. a reduced-size JPEG decode."""
    decoded = cv2.imdecode(data, flags)
    if decoded is None:
        raise ImageError(f"{source}: not a readable image (corrupt or unsupported format)")
    return to_bgr8(decoded, source=str(source)), decoded


def _has_exif(data: np.ndarray, ext: str) -> bool:
    # EXIF sits in the first segments of a JPEG (APP1) and before the pixel data of a PNG (eXIf chunk)
    head = data[:65536].tobytes()
    return (b"Exif\x00\x00" if ext == ".jpg" else b"eXIf") in head
