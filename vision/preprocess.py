"""Pre-processing identical to Ultralytics' (so results match): letterbox and tensor layout.

Example:
    >>> import numpy as np
    >>> img, lb = letterbox(np.zeros((480, 640, 3), np.uint8), (320, 320))
    >>> img.shape, lb.pad_y, lb.gain_x
    ((320, 320, 3), 40, 0.5)
    >>> tensor, boxes = letterbox_tensor([np.zeros((480, 640, 3), np.uint8)], (320, 320))
    >>> tensor.shape, tensor.dtype, boxes[0].pad_y
    ((1, 3, 320, 320), dtype('float32'), 40)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114  # Ultralytics' grey
# The padding as the model sees it: Ultralytics divides the uint8 image by 255 in float32.
_PAD_FLOAT = np.float32(PAD_VALUE) / np.float32(255)
# Every uint8 value divided by 255 in float32, as a table: one lookup per pixel instead of a division,
# bit-identical to it, and OpenCV writes it straight into a (strided) tensor plane.
_UNIT_LUT = (np.arange(256, dtype=np.float32) / np.float32(255)).reshape(1, 256)


@dataclass(frozen=True)
class Letterbox:
    """How an original image was placed in the model input: scale each axis, then pad."""

    gain_x: float
    gain_y: float
    pad_x: int
    pad_y: int
    input_shape: tuple[int, int]  # (h, w) of the padded image
    orig_shape: tuple[int, int]  # (h, w) of the original image

    def boxes_to_original(self, xyxy: np.ndarray) -> np.ndarray:
        """Map boxes from model-input pixels back to original-image pixels, clipped to the image."""
        out = xyxy.astype(np.float32, copy=True)
        if not len(out):
            return out
        # three whole-array float32 operations (the same values as per-column ones, a fraction of the calls)
        h, w = self.orig_shape
        out -= np.array((self.pad_x, self.pad_y, self.pad_x, self.pad_y), np.float32)
        out /= np.array((self.gain_x, self.gain_y, self.gain_x, self.gain_y), np.float32)
        return np.clip(out, 0, np.array((w, h, w, h), np.float32), out=out)


def letterbox_shape(
    orig_shape: tuple[int, int], new_shape: tuple[int, int], auto: bool = False, stride: int = 32
) -> Letterbox:
    """The geometry of Ultralytics' `LetterBox` (centre padding, rounding exactly as it does)."""
    h0, w0 = orig_shape
    r = min(new_shape[0] / h0, new_shape[1] / w0)
    new_w, new_h = max(round(w0 * r), 1), max(round(h0 * r), 1)
    dw, dh = new_shape[1] - new_w, new_shape[0] - new_h
    if auto:  # minimum rectangle: pad only to a multiple of the stride
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return Letterbox(
        gain_x=new_w / w0,
        gain_y=new_h / h0,
        pad_x=left,
        pad_y=top,
        input_shape=(new_h + top + bottom, new_w + left + right),
        orig_shape=(h0, w0),
    )


def letterbox(
    image: np.ndarray, new_shape: tuple[int, int], auto: bool = False, stride: int = 32
) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect ratio, then pad with grey to `new_shape` (or to a stride multiple if `auto`)."""
    lb = letterbox_shape(image.shape[:2], new_shape, auto, stride)
    h0, w0 = lb.orig_shape
    new_w, new_h = round(w0 * lb.gain_x), round(h0 * lb.gain_y)
    if (w0, h0) != (new_w, new_h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    bottom = lb.input_shape[0] - new_h - lb.pad_y
    right = lb.input_shape[1] - new_w - lb.pad_x
    if lb.pad_y or bottom or lb.pad_x or right:
        image = cv2.copyMakeBorder(
            image, lb.pad_y, bottom, lb.pad_x, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
        )
    return image, lb


def letterbox_tensor(
    images: list[np.ndarray],
    new_shape: tuple[int, int],
    auto: bool = False,
    stride: int = 32,
    dtype: np.dtype = np.float32,
) -> tuple[np.ndarray, list[Letterbox]]:
    """`letterbox` + `to_input_tensor` in one pass: each resized frame is written straight into its place in
    the NCHW tensor (BGR→RGB, /255), and only the border is filled with grey.

    The same values as Ultralytics' `im / 255` in float32, bit for bit; 5-7x less work than padding a uint8
    copy and converting the whole padded image; the /255 is a 256-entry table lookup (cv2.LUT), about a
    quarter cheaper than numpy's division of each strided channel.
    All images must give the same input shape: always so unless `auto` with frames of different sizes.
    """
    boxes = [letterbox_shape(im.shape[:2], new_shape, auto, stride) for im in images]
    shapes = {lb.input_shape for lb in boxes}
    if len(shapes) != 1:
        raise ValueError(f"frames letterbox to different input shapes {sorted(shapes)}; use auto=False")
    h, w = boxes[0].input_shape
    tensor = np.empty((len(images), 3, h, w), np.float32)
    for plane, image, lb in zip(tensor, images, boxes, strict=True):
        h0, w0 = lb.orig_shape
        new_w, new_h = round(w0 * lb.gain_x), round(h0 * lb.gain_y)
        if (w0, h0) != (new_w, new_h):
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        top, left = lb.pad_y, lb.pad_x
        plane[:, :top] = _PAD_FLOAT
        plane[:, top + new_h :] = _PAD_FLOAT
        plane[:, top : top + new_h, :left] = _PAD_FLOAT
        plane[:, top : top + new_h, left + new_w :] = _PAD_FLOAT
        channels = cv2.split(image)
        for c in range(3):  # RGB plane c comes from BGR channel 2 - c
            region = plane[c, top : top + new_h, left : left + new_w]
            written = cv2.LUT(channels[2 - c], _UNIT_LUT, dst=region)
            if not np.shares_memory(written, region):  # OpenCV allocated instead of writing in place
                region[...] = written
    return (tensor if dtype == np.float32 else tensor.astype(dtype)), boxes


def to_input_tensor(images: list[np.ndarray], dtype: np.dtype = np.float32) -> np.ndarray:
    """Stack same-size BGR uint8 images into an NCHW RGB tensor scaled to [0, 1]."""
    # blobFromImages does BGR→RGB, HWC→NCHW and the scaling in one optimised pass.
    blob = cv2.dnn.blobFromImages(images, scalefactor=1.0 / 255.0, swapRB=True)
    return blob if dtype == np.float32 else blob.astype(dtype)


def classify_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Ultralytics' classification transform: shortest side to `size`, centre crop (PIL bilinear)."""
    from PIL import Image  # torchvision's Resize on PIL images is PIL's antialiased bilinear

    th, tw = size
    h, w = image.shape[:2]
    if th == tw:  # square target: scale the shortest edge, keep aspect
        if w <= h:
            nw, nh = th, int(th * h / w)
        else:
            nh, nw = th, int(th * w / h)
    else:
        nh, nw = th, tw
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    top = round((nh - th) / 2.0)
    left = round((nw - tw) / 2.0)
    return np.ascontiguousarray(resized[top : top + th, left : left + tw])


def _resize_input(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if frame.shape[:2] == (h, w):
        return frame
    # shrinking: INTER_AREA (no aliasing, as torchvision's antialiased resize); enlarging: bilinear
    smaller = frame.shape[0] * frame.shape[1] > h * w
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if smaller else cv2.INTER_LINEAR)


def anomaly_input_tensor(frames: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """8-bit BGR frames → float32 NCHW RGB in [0, 1], each resized to `size` (h, w): the layout of
    anomalib's exports (and ours).

    >>> anomaly_input_tensor([np.full((10, 12, 3), 255, np.uint8)], (8, 8)).shape
    (1, 3, 8, 8)
    """
    h, w = size
    tensor = np.empty((len(frames), 3, h, w), np.float32)
    for plane, frame in zip(tensor, frames, strict=True):
        resized = _resize_input(frame, size)
        for c in range(3):  # BGR → RGB while dividing by 255 (a table lookup, as the detector's input)
            cv2.LUT(resized[:, :, 2 - c], _UNIT_LUT, dst=plane[c])
    return tensor
