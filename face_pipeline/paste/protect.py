"""Protected regions: pixels the paste must leave alone (a hand, a microphone, hair in front of a face).

The user's protect mask (1 = keep the original) is softened outwards like a face mask's edge: protection fades from
1 at the region's border to 0 over ``feather`` times the face's size (the same width as the face mask's fade), so
the restored face does not stop at a hard line. Inside the region nothing changes: where the mask is 1 the face's
paste weight is exactly 0 and the output pixel is the background's, bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EXACT = 1e-6  # paste weights below this (rounding of a resized hard mask) count as 0: the pixel is not touched


def _box_blur(values: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable mean over a ``2 * radius + 1`` window of ``[1, 1, h, w]`` (edges: mean of the pixels there)."""
    k = 2 * radius + 1
    values = F.avg_pool2d(values, (1, k), stride=1, padding=(0, radius), count_include_pad=False)
    return F.avg_pool2d(values, (k, 1), stride=1, padding=(radius, 0), count_include_pad=False)


def keep_weights(protect: torch.Tensor, box: tuple[int, int, int, int], width: float) -> torch.Tensor:
    """How much of a face may be pasted at the pixels of ``box`` (x0, y0, x1, y1), ``[y1 - y0, x1 - x0]`` 0..1.

    ``protect``: ``[H, W]`` 0..1 at the output's size (1 = protected). ``width``: the fade, in output pixels. The
    protection is ``max(protect, blur(protect))`` (two box blurs of radius ``width / 2``: a tent reaching ``width``
    pixels out of the region), so it only grows outwards; the weight is one minus it, and exactly 0 where it is 1."""
    x0, y0, x1, y1 = box
    radius = max(0, round(width / 2))  # two passes of a (2r + 1) box: a tent reaching 2r pixels out
    height, full_width = protect.shape
    margin = 2 * radius
    ex0, ey0 = max(0, x0 - margin), max(0, y0 - margin)
    ex1, ey1 = min(full_width, x1 + margin), min(height, y1 + margin)
    soft = protect[ey0:ey1, ex0:ex1][None, None]  # no early exit on an empty region: that would sync per face
    if radius > 0:
        soft = torch.maximum(soft, _box_blur(_box_blur(soft, radius), radius))
    keep = (1 - soft[0, 0, y0 - ey0:y1 - ey0, x0 - ex0:x1 - ex0]).clamp_(0, 1)
    return keep.masked_fill_(keep < EXACT, 0)
