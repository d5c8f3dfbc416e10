"""Pure ONNX inference for defect detection: no threads, no network, no torch.

>>> from vision import Detections
>>> len(Detections.empty())
0
"""

from vision.detections import Detections
from vision.errors import ImageError, ModelLoadError, VisionError

__all__ = [
    "Detections",
    "ImageError",
    "Model",
    "ModelLoadError",
    "Prediction",
    "VisionError",
    "load_model",
    "read_image",
]


def __getattr__(name: str):  # lazy: `import vision` stays cheap
    if name in ("Model", "Prediction"):
        from vision import model

        return getattr(model, name)
    if name == "load_model":
        from vision.loading import load_model

        return load_model
    if name == "read_image":
        from vision.images import read_image

        return read_image
    raise AttributeError(name)
