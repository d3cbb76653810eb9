"""FIR filtering with up/down-sampling (``upfirdn2d``), in a reference form and two fast special cases.

The reference form follows the definition literally (docs/network.md, building blocks): per channel, insert ``up - 1``
zeros after each sample, pad by ``(p0, p1)`` on both axes, convolve with the (flipped) 4x4 kernel, keep every
``down``-th sample. It folds channels into the batch (``[N*C, 1, H, W]``), which is simple and exact but slow on large
maps.

The fast forms compute the same maths as one depthwise (grouped) convolution, never materialising the zero-inserted
map; tests hold them to the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def make_blur_kernel(taps: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0), *, gain: float = 1.0) -> torch.Tensor:
    """The separable FIR kernel ``k k^T`` normalised to sum to ``gain``: ``[4, 4]`` float32."""
    k = torch.tensor(taps, dtype=torch.float32)
    kernel = k[:, None] * k[None, :]
    return kernel / kernel.sum() * gain


def upfirdn2d_ref(
    x: torch.Tensor, kernel: torch.Tensor, *, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Reference upfirdn2d. ``x``: ``[N, C, H, W]``; ``kernel``: ``[kh, kw]``; returns ``[N, C, H', W']`` with
    ``H' = (H*up + p0 + p1 - kh) // down + 1``."""
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    p0, p1 = pad
    out = x.reshape(n * c, 1, h, w)  # [N*C, 1, H, W]
    if up > 1:
        out = out.reshape(n * c, 1, h, 1, w, 1)
        out = F.pad(out, [0, up - 1, 0, 0, 0, up - 1])  # zeros after each sample
        out = out.reshape(n * c, 1, h * up, w * up)
    out = F.pad(out, [p0, p1, p0, p1])
    weight = torch.flip(kernel, [0, 1]).to(out.dtype).reshape(1, 1, kh, kw)
    out = F.conv2d(out, weight)
    out = out[:, :, ::down, ::down]
    return out.reshape(n, c, out.shape[-2], out.shape[-1])


def _depthwise_weight(kernel: torch.Tensor, channels: int, dtype: torch.dtype) -> torch.Tensor:
    # [C, 1, kh, kw]; the flip makes this a true convolution (a no-op for the symmetric blur kernel)
    return torch.flip(kernel, [0, 1]).to(dtype).expand(channels, 1, *kernel.shape)


def blur(x: torch.Tensor, kernel: torch.Tensor, *, pad: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``upfirdn2d(x, kernel, pad=(pad, pad))`` (+ an optional per-channel bias) as one depthwise convolution.

    ``x``: ``[N, C, H, W]`` -> ``[N, C, H + 2*pad - kh + 1, W + 2*pad - kw + 1]``.
    """
    channels = x.shape[1]
    return F.conv2d(x, _depthwise_weight(kernel, channels, x.dtype), bias, padding=pad, groups=channels)


def upsample2x(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``upfirdn2d(x, kernel, up=2, pad=(2, 1))`` for a 4x4 kernel: ``[N, C, H, W]`` -> ``[N, C, 2H, 2W]``.

    Zero insertion followed by a true 4x4 convolution is a stride-2 transposed convolution with the unflipped
    kernel; ``padding=1`` reproduces the (2, 1) pads (output ``o`` takes tap ``o + 1 - 2i`` from input ``i``).
    """
    if kernel.shape != (4, 4):
        raise ValueError(f"upsample2x expects a [4, 4] kernel, got {list(kernel.shape)}")
    channels = x.shape[1]
    weight = kernel.to(x.dtype).expand(channels, 1, 4, 4)
    return F.conv_transpose2d(x, weight, stride=2, padding=1, groups=channels)


def fold_blur_into_transposed_conv(weight: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The single transposed-conv weight equal to "stride-2 transposed conv with ``weight``, then ``blur`` with
    pads (1, 1)": the full 2-D convolution of each ``[k, k]`` filter with the 4x4 kernel.

    ``weight``: ``[O, I, k, k]`` -> ``[O, I, k + 3, k + 3]``; use it with ``conv_transpose2d(stride=2,
    padding=2)`` (for k = 3). Costs 4x the multiply-adds of the unfolded conv but removes a depthwise pass: a win on
    GPUs, where thin depthwise convolutions are slow and tensor cores are idle, not on CPUs.
    """
    out_ch, in_ch, k, _ = weight.shape
    full = F.conv_transpose2d(weight.reshape(out_ch * in_ch, 1, k, k), kernel.to(weight.dtype).reshape(1, 1, 4, 4))
    return full.reshape(out_ch, in_ch, k + 3, k + 3)


def fold_blur_into_strided_conv(weight: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The single stride-2 conv weight equal to "``blur`` with pads (2, 2), then a stride-2 conv with ``weight``"
    (pad 0): the full convolution of each filter with the flipped kernel. Use with ``conv2d(stride=2, padding=2)``.

    ``weight``: ``[O, I, k, k]`` -> ``[O, I, k + 3, k + 3]``.
    """
    flipped = torch.flip(kernel, [0, 1])
    return fold_blur_into_transposed_conv(weight, flipped)


def upsample2x_bilinear(x: torch.Tensor) -> torch.Tensor:
    """:func:`upsample2x` for the standard gain-4 ``[1, 3, 3, 1]`` kernel only, via bilinear interpolation.

    Per axis that filter gives ``y[2m] = 3/4 x[m] + 1/4 x[m-1]`` and ``y[2m+1] = 3/4 x[m] + 1/4 x[m+1]`` with zeros
    outside: half-pixel bilinear upsampling, except that bilinear repeats the edge sample where the filter sees a
    zero, so the first and last row and column are scaled by 3/4. ``[N, C, H, W]`` -> ``[N, C, 2H, 2W]``.
    """
    out = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    height, width = out.shape[-2:]
    out[:, :, ::height - 1].mul_(0.75)  # first and last row in one pass (height >= 2)
    out[:, :, :, ::width - 1].mul_(0.75)  # first and last column; the corners get 0.75**2, as in the filter
    return out


def transposed_to_subpixel(weight: torch.Tensor) -> torch.Tensor:
    """Rewrite a 6x6 stride-2 transposed convolution (``conv_transpose2d(x, weight.transpose(0, 1), stride=2,
    padding=2)``, as :func:`fold_blur_into_transposed_conv` produces for k = 3) as a sub-pixel convolution.

    Output pixel ``(2m + dy, 2n + dx)`` takes input taps ``x[m + 1 - j]`` with kernel rows ``2j + dy`` (j = 0, 1, 2),
    so each of the four phases is an ordinary 3x3 convolution (padding 1) at the input resolution, with the flipped
    kernel subsampled at stride 2. ``weight``: ``[O, I, 6, 6]`` -> ``[4*O, I, 3, 3]``; output channel
    ``(2*dy + dx)*O + o`` holds output channel ``o`` at phase ``(dy, dx)``. An ordinary convolution with four times
    the output channels at a quarter of the pixels suits tensor cores far better than a thin transposed one.
    """
    if weight.dim() != 4 or weight.shape[-2:] != (6, 6):
        raise ValueError(f"transposed_to_subpixel expects [O, I, 6, 6], got {list(weight.shape)}")
    flipped = torch.flip(weight, [2, 3])
    phases = [flipped[:, :, 1 - dy::2, 1 - dx::2] for dy in (0, 1) for dx in (0, 1)]
    return torch.cat(phases, 0).contiguous()
