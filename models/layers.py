"""Building blocks shared by MSDNet and RANet (docs/architectures.md#msdnet, #ranet)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class BottleneckConv(nn.Sequential):
    """B(cin, cout, down, w): optional 1x1 bottleneck to min(cin, w*cout), then a 3x3 conv."""

    def __init__(self, cin: int, cout: int, down: bool, width: int, bottleneck: bool = True):
        layers: list[nn.Module] = []
        inner = cin
        if bottleneck:
            inner = min(cin, width * cout)
            layers += [ConvBNReLU(cin, inner, 1, 1, 0)]
        layers += [ConvBNReLU(inner, cout, 3, 2 if down else 1, 1)]
        super().__init__(*layers)


class ExitHead(nn.Module):
    """Classifier after a block: two stride-2 ConvBNReLU, 2x2 average pool, linear.

    CIFAR-sized inputs use 128 channels in the convs; ImageNet keeps the input width.
    """

    def __init__(self, cin: int, num_classes: int, imagenet: bool):
        super().__init__()
        width = cin if imagenet else 128
        self.features = nn.Sequential(ConvBNReLU(cin, width, 3, 2, 1),
                                      ConvBNReLU(width, width, 3, 2, 1), nn.AvgPool2d(2))
        self.linear = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.features(x).flatten(1))


def imagenet_stem(cout: int) -> nn.Sequential:
    """7x7 stride-2 conv with bias, BN, ReLU, 3x3 stride-2 max-pool."""
    return nn.Sequential(nn.Conv2d(3, cout, 7, 2, 3), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.MaxPool2d(3, 2, 1))


def dataset_stem(cout: int, imagenet: bool) -> nn.Module:
    """First layer of the finest scale: 3x3 ConvBNReLU on CIFAR, the ImageNet stem otherwise."""
    return imagenet_stem(cout) if imagenet else ConvBNReLU(3, cout, 3, 1, 1)


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def scale_gradient(x: Tensor, scale: float) -> Tensor:
    """Identity forward; multiplies the gradient by `scale` on the way back (MSDNet-GE)."""
    return _ScaleGradient.apply(x, scale)


class Resize(nn.Module):
    """Bilinear resize (align_corners=True) to a given spatial size; a module so costs see it."""

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=True)
