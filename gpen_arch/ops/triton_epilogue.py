"""One Triton kernel for the whole StyledConv epilogue (see ``epilogue.styled_concat``): it reads the convolution
output (undoing a sub-pixel layout on the fly) and the encoder feature once, and writes the activated
``[conv * scale + b1 | alpha * feature + b2]`` concatenation once. The PyTorch form needs three strided passes.

Triton is optional: it is imported on first use only, and :func:`concat_epilogue` returns False (the caller then
runs the PyTorch form) when Triton is missing, the tensors are not on a CUDA device, not in a dtype it takes or not
channels-last contiguous, or the kernel failed once (it is not tried again in this process). Each such fallback is
logged once, as a warning with its reason: asking for the fused kernel and silently not getting it would hide a slow
path. With
``TRITON_INTERPRET=1`` the kernel also runs, slowly, on CPU tensors: that is how the tests check it without a GPU.
Arithmetic is float32 with one rounding to the output dtype.
"""

from __future__ import annotations

import functools
import logging
import os

import torch

from .activation import NEGATIVE_SLOPE

logger = logging.getLogger(__name__)

_state: dict = {"failed": None}  # why the kernel is off for this process (Triton unusable, or it failed once)
_reported: set[str] = set()  # fallback reasons already logged
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def _kernel():
    """Compile-on-demand: importing this module never imports Triton."""
    import triton
    import triton.language as tl

    @triton.jit
    def concat_epilogue_kernel(raw_ptr, scale_ptr, bias_ptr, feat_ptr, alpha_ptr, nbias_ptr, out_ptr,
                               num_pixels, channels, height, width, slope,
                               SUBPIXEL: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr,
                               BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        # one program: BLOCK_P output pixels (n, y, x) in raster order, all channels; channels-last addressing
        pix = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
        ch = tl.arange(0, BLOCK_C)
        pix_ok = pix < num_pixels
        ch_ok = ch < channels
        mask = pix_ok[:, None] & ch_ok[None, :]
        plane = height * width
        sample = pix // plane
        if SUBPIXEL:
            rem = pix % plane
            y = rem // width
            x = rem % width
            src_pixel = (sample * (height // 2) + y // 2) * (width // 2) + x // 2
            src = src_pixel * (4 * channels) + ((y % 2) * 2 + (x % 2)) * channels
        else:
            src = pix * channels
        v = tl.load(raw_ptr + src[:, None] + ch[None, :], mask=mask, other=0.0).to(tl.float32)
        if HAS_SCALE:
            s = tl.load(scale_ptr + sample[:, None] * channels + ch[None, :], mask=mask, other=0.0)
            v = v * s.to(tl.float32)
        if HAS_BIAS:
            b = tl.load(bias_ptr + ch, mask=ch_ok, other=0.0).to(tl.float32)
            v = v + b[None, :]
        v = tl.where(v > 0, v, v * slope)
        dst = pix[:, None] * (2 * channels) + ch[None, :]
        tl.store(out_ptr + dst, v.to(out_ptr.dtype.element_ty), mask=mask)
        f = tl.load(feat_ptr + pix[:, None] * channels + ch[None, :], mask=mask, other=0.0).to(tl.float32)
        a = tl.load(alpha_ptr).to(tl.float32)
        nb = tl.load(nbias_ptr + ch, mask=ch_ok, other=0.0).to(tl.float32)
        g = f * a + nb[None, :]
        g = tl.where(g > 0, g, g * slope)
        tl.store(out_ptr + dst + channels, g.to(out_ptr.dtype.element_ty), mask=mask)

    return triton, concat_epilogue_kernel


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)


def report_fallback(reason: str) -> None:
    """Log, once per distinct ``reason``, that the fused epilogue was asked for and the PyTorch form runs instead."""
    if reason not in _reported:
        _reported.add(reason)
        logger.warning("GPEN: the fused Triton epilogue cannot run (%s); using the PyTorch form", reason)


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the fused kernel can take these tensors (device, dtype, Triton present, not failed before); when not,
    the reason is logged once (:func:`report_fallback`)."""
    if _state["failed"]:
        report_fallback(_state["failed"])
        return False
    device = tensors[0].device
    if any(t.device != device for t in tensors):
        report_fallback("its tensors are on different devices")
        return False
    dtypes = sorted({str(t.dtype) for t in tensors if t.dtype not in _DTYPES})
    if dtypes:
        report_fallback(f"it takes float32, float16 and bfloat16, not {', '.join(dtypes)}")
        return False
    if device.type != "cuda" and not _interpreting():
        report_fallback(f"Triton runs on CUDA devices, not {device.type}")
        return False
    try:
        _kernel()
    except Exception as exc:  # noqa: BLE001 - ImportError, or a Triton too old for this kernel: off for the process
        _state["failed"] = f"Triton is not usable here: {type(exc).__name__}: {exc}"
        report_fallback(_state["failed"])
        return False
    return True


def concat_epilogue(result, feature: torch.Tensor, alpha: torch.Tensor, noise_bias: torch.Tensor,
                    out: torch.Tensor) -> bool:
    """Write ``epilogue.styled_concat``'s output into ``out`` (``[N, 2*O, H, W]`` channels-last). Returns False,
    touching nothing, when the kernel cannot run here."""
    raw, out_ch = result.raw, result.out_channels
    if not usable(raw, feature, out):
        return False
    if not (_channels_last(raw) and _channels_last(feature) and _channels_last(out)):
        report_fallback("it takes channels-last tensors only (FastOptions.channels_last is off, or a layout was "
                        "refused)")
        return False
    if tuple(feature.shape) != tuple(result.shape):
        report_fallback(f"the feature's shape {list(feature.shape)} is not the output's {list(result.shape)}")
        return False
    n, _, height, width = out.shape
    scale = result.scale.contiguous() if result.scale is not None else raw
    bias = result.bias.contiguous() if result.bias is not None else raw
    alpha = alpha.reshape(1).to(torch.float32)
    noise_bias = noise_bias.contiguous()
    try:
        triton, kernel = _kernel()
        block_c = triton.next_power_of_2(out_ch)
        block_p = max(1, min(1024, 4096 // block_c))
        grid = (triton.cdiv(n * height * width, block_p),)
        has_scale, has_bias = result.scale is not None, result.bias is not None
        # the launcher is typed from the kernel's signature, whose tl.constexpr annotations mark compile-time
        # arguments; Triton takes them as plain Python values (its documented usage), which the types do not say
        kernel[grid](raw, scale, bias, feature, alpha, noise_bias, out, n * height * width, out_ch, height, width,
                     NEGATIVE_SLOPE, SUBPIXEL=result.subpixel, BLOCK_C=block_c,
                     HAS_SCALE=has_scale, HAS_BIAS=has_bias, BLOCK_P=block_p)  # pyright: ignore[reportArgumentType]
    except Exception as exc:  # noqa: BLE001 - a compiler or driver problem: fall back for good, but say so once
        _state["failed"] = f"it failed: {type(exc).__name__}: {exc}; not tried again in this process"
        report_fallback(_state["failed"])
        return False
    return True
