"""Region masks given by the user: "only the faces in here" (selection) and "never touch this" (paste).

A mask is a float tensor in 0..1, ``[H, W]`` or ``[N, H, W]`` (ComfyUI's MASK; ``[N, 1, H, W]`` is accepted too),
with one mask per image or one for the whole batch (N = 1). It may come at another resolution than the images
(e.g. drawn on a preview): it is resized to the images' size before use (bilinear; by repeating pixels for an
integer upscale, such as a paste at 2x, so a hard mask stays hard).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import InvalidImageError
from .types import DetectedFace

#: default share of a face's box the region mask must cover for the face to count as inside it
MIN_OVERLAP = 0.3


def masks_for(mask: torch.Tensor, *, batch: int, size: tuple[int, int], what: str = "mask") -> torch.Tensor:
    """``mask`` (see the module doc) as ``[batch, H, W]`` float32 0..1 at ``size`` = (H, W), on its own device.

    Raises ``InvalidImageError`` for a wrong shape or batch, NaN, or values outside 0..1."""
    if not isinstance(mask, torch.Tensor):
        raise InvalidImageError(f"the {what} must be a tensor [N, H, W] in 0..1, got {type(mask).__name__}")
    shape = list(mask.shape)
    if mask.dim() == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    elif mask.dim() == 2:
        mask = mask[None]
    if mask.dim() != 3 or mask.shape[-1] == 0 or mask.shape[-2] == 0:
        raise InvalidImageError(f"the {what} must be [N, H, W] (ComfyUI's MASK) or [H, W], got shape {shape}")
    if mask.shape[0] not in (1, batch):
        raise InvalidImageError(f"the {what} has {mask.shape[0]} masks for {batch} images: give one mask per image "
                                f"or a single mask for all")
    mask = mask.float()
    if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        raise InvalidImageError(f"the {what} must hold values in 0..1 (found "
                                f"{mask.min().item():.3g}..{mask.max().item():.3g})")
    height, width = mask.shape[-2:]
    if (height, width) != tuple(size):
        if size[0] % height == 0 and size[1] % width == 0 and size[0] // height == size[1] // width:
            k = size[0] // height  # an integer upscale (a paste at 2x or 4x): each pixel repeated, hard edges stay hard
            mask = mask.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)
        else:
            mask = F.interpolate(mask[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].clamp_(0, 1)
    return mask.expand(batch, *size)


def box_coverage(mask: torch.Tensor, box: tuple[float, float, float, float]) -> float:
    """Mean of ``mask`` ``[H, W]`` over the pixels whose centres lie in ``box`` (x1, y1, x2, y2), parts of the box
    outside the image counting as uncovered: the share of the box the mask covers, 0..1."""
    height, width = mask.shape[-2:]
    x1, y1, x2, y2 = box
    c0, c1 = math.ceil(x1), math.floor(x2) + 1  # columns (and rows) whose centres are in the box
    r0, r1 = math.ceil(y1), math.floor(y2) + 1
    whole = max(1, c1 - c0) * max(1, r1 - r0)
    c0, c1, r0, r1 = max(c0, 0), min(c1, width), max(r0, 0), min(r1, height)
    if c1 <= c0 or r1 <= r0:
        return 0.0
    return float(mask[r0:r1, c0:c1].sum()) / whole


def coverages(faces_per_image: list[list[DetectedFace]], masks: torch.Tensor) -> list[list[float]]:
    """``box_coverage`` of every face of image ``i`` by ``masks[i]`` (``[B, H, W]``, from ``masks_for``)."""
    return [[box_coverage(masks[i], face.box) for face in faces] for i, faces in enumerate(faces_per_image)]
