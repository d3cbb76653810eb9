"""The building blocks of GPEN, with attribute names that reproduce the released checkpoint keys exactly.

Each module's ``forward`` is the plain reference form described in docs/network.md (equalized learning rate: stored
weights are N(0, 1)-scale and multiplied by ``scale`` at run time). The fast inference path in ``fast_forward.py`` reads
the same parameters and buffers and computes the same maths with fewer passes over memory.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ops.activation import fused_leaky_relu
from .ops.modulated_conv import modulated_conv2d_ref
from .ops.upfirdn2d import make_blur_kernel, upfirdn2d_ref


class PixelNorm(nn.Module):
    """``z * rsqrt(mean(z^2, dim=1) + 1e-8)`` on ``[N, D]``."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * torch.rsqrt(torch.mean(z * z, dim=1, keepdim=True) + 1e-8)


class Blur(nn.Module):
    """FIR filter with fixed pads; the 4x4 kernel is a persistent buffer (``*.kernel`` in the checkpoint)."""

    kernel: torch.Tensor  # [4, 4] buffer (registered in __init__)

    def __init__(self, *, pad: tuple[int, int], gain: float) -> None:
        super().__init__()
        self.pad = pad
        self.register_buffer("kernel", make_blur_kernel(gain=gain))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d_ref(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling of the ToRGB skip image: ``upfirdn2d(x, gain-4 kernel, up=2, pad=(2, 1))``."""

    kernel: torch.Tensor  # [4, 4] buffer (registered in __init__)

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel(gain=4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d_ref(x, self.kernel, up=2, pad=(2, 1))


class EqualConv2d(nn.Module):
    """Convolution with equalized learning rate and no bias (GPEN's ConvLayers keep the bias in the activation)."""

    def __init__(self, *, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, stride=self.stride, padding=self.padding)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate and learning-rate multiplier ``lr_mul``; optionally fused lrelu."""

    def __init__(
        self, *, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activate: bool = False
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activate:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul)


class FusedLeakyReLU(nn.Module):
    """``sqrt(2) * leaky_relu(x + bias, 0.2)`` with a learned per-channel bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class ConvLayer(nn.Sequential):
    """Encoder layer: [Blur(gain 1, pads (2, 2))] + EqualConv2d + FusedLeakyReLU.

    Indices (and so checkpoint keys) are ``0.kernel, 1.weight, 2.bias`` when downsampling, else ``0.weight, 1.bias``.
    """

    def __init__(self, *, in_channels: int, out_channels: int, kernel_size: int, downsample: bool) -> None:
        layers: list[nn.Module] = []
        if downsample:
            layers.append(Blur(pad=(2, 2), gain=1.0))  # H -> H + 1 for the 4x4 kernel
            layers.append(EqualConv2d(in_channels=in_channels, out_channels=out_channels,
                                      kernel_size=kernel_size, stride=2, padding=0))
        else:
            layers.append(EqualConv2d(in_channels=in_channels, out_channels=out_channels,
                                      kernel_size=kernel_size, stride=1, padding=kernel_size // 2))
        layers.append(FusedLeakyReLU(out_channels))
        super().__init__(*layers)

    @property
    def downsample(self) -> bool:
        return isinstance(self[0], Blur)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution (see ``ops/modulated_conv.py``)."""

    blur: Blur  # only when ``upsample``

    def __init__(
        self, *, in_channels: int, out_channels: int, kernel_size: int, style_dim: int, demodulate: bool,
        upsample: bool,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        if upsample:
            self.blur = Blur(pad=(1, 1), gain=4.0)
        self.modulation = EqualLinear(in_dim=style_dim, out_dim=in_channels, bias_init=1.0)
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.demodulate = demodulate
        self.upsample = upsample

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        styles = self.modulation(style)  # [N, in]
        kernel = self.blur.kernel if self.upsample else None
        return modulated_conv2d_ref(x, self.weight, styles, scale=self.scale, demodulate=self.demodulate,
                                    upsample=self.upsample, blur_kernel=kernel)


class NoiseInjection(nn.Module):
    """GPEN's "noise": the encoder feature, scaled by one learned scalar, concatenated on the channel axis."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.weight * feature], dim=1)  # [N, C, H, W] -> [N, 2C, H, W]


class StyledConv(nn.Module):
    """ModulatedConv2d (3x3) -> concat the scaled encoder feature -> fused lrelu with a ``2 * out`` bias."""

    def __init__(self, *, in_channels: int, out_channels: int, style_dim: int, upsample: bool) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels=in_channels, out_channels=out_channels, kernel_size=3,
                                    style_dim=style_dim, demodulate=True, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(2 * out_channels)

    def forward(self, x: torch.Tensor, style: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), feature))


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation) + bias, plus the 2x FIR-upsampled previous skip image."""

    upsample: Upsample  # only when built with ``upsample`` (every ToRGB but the first)

    def __init__(self, *, in_channels: int, style_dim: int, upsample: bool) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_channels=in_channels, out_channels=3, kernel_size=1, style_dim=style_dim,
                                    demodulate=False, upsample=False)

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConstantInput(nn.Module):
    """The learned 4x4 constant the decoder starts from, repeated over the batch."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, 4, 4))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.repeat(batch, 1, 1, 1)
