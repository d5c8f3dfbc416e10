"""The segmentation network: a small U-Net whose logits mark, per pixel, what looks like a defect.

Input NCHW RGB float in [0, 1] (the contract's layout); the normalisation is the first thing the network
does, so the exported graph needs nothing from the caller. Height and width must be multiples of 8 (three
poolings). Needs torch (the `train` extra); nothing else in `training.anomaly` imports this at module level.

Example:
    >>> import torch
    >>> net = SegNet(width=8).eval()
    >>> net(torch.zeros(1, 3, 64, 96)).shape
    torch.Size([1, 1, 64, 96])
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

MULTIPLE = 8  # input sides must be multiples of this (three 2x poolings)


def _block(cin: int, cout: int, convs: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)]
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SegNet(nn.Module):
    """Encoder at 1, 1/2, 1/4, 1/8 resolution (widths w, 2w, 4w, 8w), one conv per decoder level."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        w = width
        self.width = width
        self.e1, self.e2, self.e3, self.e4 = (
            _block(3, w),
            _block(w, 2 * w),
            _block(2 * w, 4 * w),
            _block(4 * w, 8 * w),
        )
        self.d3 = _block(8 * w + 4 * w, 4 * w, 1)
        self.d2 = _block(4 * w + 2 * w, 2 * w, 1)
        self.d1 = _block(2 * w + w, w, 1)
        self.head = nn.Conv2d(w, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.5) / 0.25  # inside the graph: callers pass [0, 1]
        f1 = self.e1(x)
        f2 = self.e2(F.max_pool2d(f1, 2))
        f3 = self.e3(F.max_pool2d(f2, 2))
        f4 = self.e4(F.max_pool2d(f3, 2))
        y = self.d3(torch.cat([F.interpolate(f4, scale_factor=2.0, mode="nearest"), f3], 1))
        y = self.d2(torch.cat([F.interpolate(y, scale_factor=2.0, mode="nearest"), f2], 1))
        y = self.d1(torch.cat([F.interpolate(y, scale_factor=2.0, mode="nearest"), f1], 1))
        return self.head(y)


class ExportWrapper(nn.Module):
    """What the ONNX file computes: the sigmoid map and the image score = max of the map after a k x k mean
    (k = `pool`, 1 = none: a light pooling keeps one hot pixel of noise from rejecting a part)."""

    def __init__(self, net: SegNet, pool: int) -> None:
        super().__init__()
        self.net = net
        self.pool = int(pool)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amap = torch.sigmoid(self.net(x))
        pooled = (
            amap
            if self.pool <= 1
            else F.avg_pool2d(amap, self.pool, 1, self.pool // 2, count_include_pad=False)
        )
        score = torch.amax(pooled, dim=(1, 2, 3))
        return score, amap


def image_scores(logits: torch.Tensor, pool: int) -> torch.Tensor:
    """The exported graph's image score from logits (N,1,H,W), for evaluation inside training."""
    amap = torch.sigmoid(logits)
    if pool > 1:
        amap = F.avg_pool2d(amap, pool, 1, pool // 2, count_include_pad=False)
    return torch.amax(amap, dim=(1, 2, 3))
