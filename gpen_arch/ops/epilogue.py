"""What happens to a convolution's output before the next layer reads it, in as few passes over memory as possible.

A modulated convolution (``modulated_conv.py``) returns a :class:`ConvOutput`: the raw convolution result plus what
is still owed to it (a per-sample, per-channel output scale from demodulation on the batch path; the bias; the
pixel shuffle of a sub-pixel upsampling conv). :func:`materialize` settles the debt into a plain tensor;
:func:`styled_concat` settles it straight into GPEN's concatenation buffer ``[conv | alpha * feature]`` with the
leaky ReLU applied, which is where most of the decoder's elementwise traffic is.

In PyTorch alone that buffer costs three passes (activation of the conv half, written through a strided view, so
the pixel shuffle is free; ``addcmul`` and activation of the feature half). ``fused=True`` does all of it in one
Triton kernel (``triton_epilogue.py``) where Triton can run; everywhere else, and whenever that kernel cannot be
used, the PyTorch form runs. Activations are GPEN's ``leaky_relu(., 0.2)`` without the ``sqrt(2)`` gain (the fast
path folds it into the consumers' weights).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .activation import NEGATIVE_SLOPE, leaky_relu_unscaled_


class ConvOutput(NamedTuple):
    """A convolution result with its pending epilogue.

    ``raw``: ``[N, O, H, W]``; with ``subpixel``, ``[N, 4*O, H/2, W/2]`` where channel ``(2*dy + dx)*O + o`` is
    output pixel ``(2h + dy, 2w + dx)`` of channel ``o``. ``scale``: ``[N, O]`` or None, multiplies ``raw``;
    ``bias``: ``[O]`` or None, added after the scale.
    """

    raw: torch.Tensor
    out_channels: int
    subpixel: bool = False
    scale: torch.Tensor | None = None
    bias: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The ``[N, O, H, W]`` shape of the settled output."""
        n, _, height, width = self.raw.shape
        if self.subpixel:
            return n, self.out_channels, 2 * height, 2 * width
        return n, self.out_channels, height, width

    @property
    def settled(self) -> bool:
        """True when ``raw`` already is the output."""
        return not self.subpixel and self.scale is None and self.bias is None


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """Keep channels-last activations channels-last (cuDNN's tensor-core kernels and oneDNN prefer it)."""
    if x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def write_into(result: ConvOutput, out: torch.Tensor, *, activate: bool) -> torch.Tensor:
    """Settle ``result`` into ``out`` (``[N, O, H, W]``, any strides, e.g. a channel slice of a larger buffer) in one
    pass, plus one in-place activation pass when both a scale or bias and ``activate`` are pending."""
    src, dst, out_ch = result.raw, out, result.out_channels
    if result.subpixel:
        height, width = src.shape[-2:]
        src = src.unflatten(1, (2, 2, out_ch)).permute(0, 3, 4, 1, 5, 2)  # [N, O, H, dy, W, dx]: a view
        dst = out.unflatten(2, (height, 2)).unflatten(4, (width, 2))  # the same view of the output
    per_channel = (1, out_ch) + (1,) * (src.dim() - 2)
    scale = None if result.scale is None else result.scale.reshape((src.shape[0],) + per_channel[1:])
    bias = None if result.bias is None else result.bias.to(src.dtype).reshape(per_channel)
    if scale is not None and bias is not None:
        torch.addcmul(bias, src, scale, out=dst)
    elif scale is not None:
        torch.mul(src, scale, out=dst)
    elif bias is not None:
        torch.add(src, bias, out=dst)
    elif activate:
        torch.ops.aten.leaky_relu.out(src, NEGATIVE_SLOPE, out=dst)  # copy and activation in one pass
        return out
    else:
        dst.copy_(src)
    if activate:
        leaky_relu_unscaled_(dst)
    return out


def materialize(result: ConvOutput, *, activate: bool = False) -> torch.Tensor:
    """The settled output ``[N, O, H, W]`` (the raw tensor itself, updated in place, when no shuffle is pending)."""
    raw = result.raw
    if result.settled:
        return leaky_relu_unscaled_(raw) if activate else raw
    if not result.subpixel:
        return write_into(result, raw, activate=activate)  # elementwise in place over the same tensor
    out = torch.empty(result.shape, dtype=raw.dtype, device=raw.device, memory_format=memory_format_of(raw))
    return write_into(result, out, activate=activate)


def styled_concat(
    result: ConvOutput, feature: torch.Tensor, alpha: torch.Tensor, noise_bias: torch.Tensor, *, fused: bool = False
) -> torch.Tensor:
    """GPEN's StyledConv after its convolution: ``lrelu(cat([conv + b1, alpha * feature + b2]))`` (unscaled).

    ``feature``: ``[N, O, H, W]``; ``alpha``: a one-element tensor; ``noise_bias``: ``[O]`` (the second half of the
    activation's bias; the first half travels in ``result``). Returns ``[N, 2*O, H, W]``.
    """
    n, out_ch, height, width = result.shape
    raw = result.raw
    out = torch.empty((n, 2 * out_ch, height, width), dtype=raw.dtype, device=raw.device,
                      memory_format=memory_format_of(raw))
    if fused:
        from . import triton_epilogue

        if triton_epilogue.concat_epilogue(result, feature, alpha, noise_bias, out):
            return out
    write_into(result, out[:, :out_ch], activate=True)
    second = out[:, out_ch:]
    torch.addcmul(noise_bias.to(raw.dtype).reshape(1, out_ch, 1, 1), feature, alpha.to(raw.dtype), out=second)
    leaky_relu_unscaled_(second)
    return out
