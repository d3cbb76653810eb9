"""Scene cuts in a frame sequence: where the picture changes so much that no face track may continue across.

Each frame is reduced to a small grey thumbnail (``THUMB`` x ``THUMB``, antialiased); a cut is placed before frame
``t`` when the mean absolute difference between the thumbnails of frames ``t - 1`` and ``t`` exceeds
``CUT_THRESHOLD`` (0..1 grey levels). Consecutive frames of one shot differ by a few hundredths even with fast
motion; two unrelated pictures by a tenth or more.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

THUMB = 32
CUT_THRESHOLD = 0.1


def frame_thumbnails(images: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` RGB 0..1 -> ``[B, THUMB * THUMB]`` float32 grey thumbnails on the CPU (cheap to keep for a
    whole sequence, so a caller reading frames one by one can collect them as it goes)."""
    grey = images.float().mul(torch.tensor([0.299, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)).sum(1,
                                                                                                             True)
    small = F.interpolate(grey, size=(THUMB, THUMB), mode="bilinear", align_corners=False, antialias=True)
    return small.flatten(1).cpu()


def scene_cuts(thumbnails: torch.Tensor, *, threshold: float = CUT_THRESHOLD) -> tuple[int, ...]:
    """Frame indices that start a new scene (never 0), from ``frame_thumbnails`` of the whole sequence in order."""
    if thumbnails.shape[0] < 2:
        return ()
    change = (thumbnails[1:] - thumbnails[:-1]).abs().mean(1)  # [B - 1]
    return tuple(int(t) + 1 for t in torch.nonzero(change > threshold).flatten())
