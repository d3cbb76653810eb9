"""Colour correction of restored faces toward the originals: per-channel mean and standard deviation matched in
YCbCr (BT.601), weighted by the face mask so the background at the crop's corners does not count.

YCbCr is a linear transform of RGB, so the correction is one 3x3 matrix and an offset per face, applied in a single
pass at full resolution (cheap even at 2048). The statistics are taken on an antialiased 128-pixel copy: colour and
tone live in the low frequencies, while the fine detail a restorer adds would raise the restored face's full-band
luma deviation and make a full-band match flatten that detail again. The gain is bounded to 0.5..2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_RGB_TO_YCBCR = torch.tensor([[0.299, 0.587, 0.114],
                              [-0.168736, -0.331264, 0.5],
                              [0.5, -0.418688, -0.081312]], dtype=torch.float64)
STATS_SIZE = 128


def _weighted_stats(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    total = w.sum((2, 3)).clamp_min(1e-6)  # [F, 1]
    mean = (x * w).sum((2, 3)) / total  # [F, 3]
    var = (((x - mean[..., None, None]) ** 2) * w).sum((2, 3)) / total
    return mean, var.clamp_min(1e-8).sqrt()


def stats_copy(x: torch.Tensor, size: int) -> torch.Tensor:
    """``[F, C, S, S]`` -> the antialiased ``[F, C, size, size]`` float32 copy the statistics are taken on."""
    return F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def match_color(restored: torch.Tensor, original: torch.Tensor, mask: torch.Tensor, *,
                reference: torch.Tensor | None = None) -> torch.Tensor:
    """``restored``, ``original``: ``[F, 3, S, S]`` RGB 0..1; ``mask``: ``[F, 1, s, s]`` 0..1 (any side ``s``: it is
    resized to the statistics' size). ``reference``: the originals' statistics copy ``[F, 3, m, m]`` (m = min(
    STATS_SIZE, S)) to match instead of ``stats_copy(original)`` (video: a blend over the frames of each face's
    track, ``video/temporal.py``). Returns the corrected ``[F, 3, S, S]`` RGB, clamped to 0..1."""
    small = min(STATS_SIZE, restored.shape[-1])
    if reference is not None and tuple(reference.shape) != (restored.shape[0], 3, small, small):
        raise ValueError(f"the colour reference must be [{restored.shape[0]}, 3, {small}, {small}], got "
                         f"{list(reference.shape)}")
    to_ycc = _RGB_TO_YCBCR.to(device=restored.device, dtype=torch.float32)
    w = stats_copy(mask, small)
    ycc_r = torch.einsum("ij,fjhw->fihw", to_ycc, stats_copy(restored, small))
    ycc_o = torch.einsum("ij,fjhw->fihw", to_ycc,
                         stats_copy(original, small) if reference is None else reference.float())
    mean_r, std_r = _weighted_stats(ycc_r, w)
    mean_o, std_o = _weighted_stats(ycc_o, w)
    gain = (std_o / std_r).clamp(0.5, 2.0)  # [F, 3]; never amplify noise wildly
    # rgb' = P^-1 (g * (P rgb - mean_r) + mean_o) = A rgb + c
    inverse = torch.linalg.inv(_RGB_TO_YCBCR).to(device=restored.device, dtype=torch.float32)  # float64 on the CPU
    matrix = inverse @ (gain[..., None] * to_ycc)  # [F, 3, 3]
    offset = (inverse @ (mean_o - gain * mean_r)[..., None])[..., 0]  # [F, 3]
    out = torch.einsum("fij,fjhw->fihw", matrix, restored.float()) + offset[..., None, None]
    return out.clamp_(0, 1)


GRAY_TOLERANCE = 2.5 / 255  # channel spread still counted as gray (JPEG rounding of a black-and-white photo)


def gray_images(images: torch.Tensor, *, tolerance: float = GRAY_TOLERANCE) -> torch.Tensor:
    """``[B]`` bool: which images of ``[B, 3, H, W]`` are black-and-white (R = G = B within ``tolerance``)."""
    spread = images.amax(1) - images.amin(1)  # [B, H, W]
    return spread.flatten(1).amax(1) <= tolerance


def to_gray(faces: torch.Tensor) -> torch.Tensor:
    """``[F, 3, S, S]`` RGB -> the same shape with every channel the BT.601 luma (so R = G = B exactly)."""
    weights = _RGB_TO_YCBCR[0].to(device=faces.device, dtype=faces.dtype).view(1, 3, 1, 1)
    return (faces * weights).sum(1, keepdim=True).clamp_(0, 1).expand_as(faces).contiguous()
