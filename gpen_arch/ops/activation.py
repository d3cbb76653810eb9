"""The biased leaky ReLU of StyleGAN2 (``FusedLeakyReLU``): ``sqrt(2) * leaky_relu(x + b, 0.2)``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NEGATIVE_SLOPE = 0.2
GAIN = math.sqrt(2.0)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Reference form. ``x``: ``[N, C, ...]``; ``bias``: ``[C]`` broadcast over dim 1."""
    shape = (1, bias.shape[0]) + (1,) * (x.dim() - 2)
    return GAIN * F.leaky_relu(x + bias.reshape(shape), NEGATIVE_SLOPE)


def leaky_relu_unscaled_(x: torch.Tensor) -> torch.Tensor:
    """In place ``leaky_relu(x, 0.2)`` without the ``sqrt(2)`` gain (the fast path folds the gain into the
    next linear layer's weights)."""
    return F.leaky_relu_(x, NEGATIVE_SLOPE)
