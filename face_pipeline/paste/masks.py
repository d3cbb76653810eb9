"""Soft face masks in crop space (float 0..1), defined analytically so they can be evaluated anywhere.

``rounded_rect`` (default): the crop minus a margin of 26/512 of its side (the official rectangle), with rounded
corners; ``ellipse``: an ellipse around the face of the GPEN/FFHQ templates. Both fade to 0 over ``feather`` times the
crop side (a smoothstep of the distance to the edge, inside the shape), so the feather scales with the face and the
mask is exactly 0 at the crop's border. ``parsing`` masks come from ``parsing.py``.

Each shape is a function of crop coordinates in units of the crop side (0..1 across the crop, pixel centres at
``(i + 0.5) / S``): ``mask_at`` evaluates it at any points, which lets paste-back compute a face's mask directly
at the output pixels (no S x S mask to build and warp); ``rounded_rect_mask`` / ``ellipse_mask`` render it on the
crop's pixel grid.
"""

from __future__ import annotations

import torch

ANALYTIC_MASKS = ("rounded_rect", "ellipse")
#: every paste mask (``PasteOptions.mask_type``); the official ones: the official post-processing
#: (``official_mask.py``) of a parse (hair kept) or of an all-face parse (no parser needed)
OFFICIAL_MASKS = ("parsing_official", "rect_official")
MASK_TYPES = (*ANALYTIC_MASKS, "parsing", "parsing_no_hair", *OFFICIAL_MASKS)
MARGIN = 26 / 512
CORNER = 0.12
ELLIPSE_CENTRE, ELLIPSE_RADII = (0.5, 0.52), (0.38, 0.42)  # inside the 26/512 margin


def _smoothstep(t: torch.Tensor) -> torch.Tensor:
    t = t.clamp(0, 1)
    return t * t * (3 - 2 * t)


def mask_at(kind: str, x: torch.Tensor, y: torch.Tensor, *, feather: float) -> torch.Tensor:
    """The ``kind`` mask (``rounded_rect`` or ``ellipse``) at crop coordinates ``x``, ``y`` (broadcastable tensors,
    crop side = 1). Returns float values in 0..1 of the broadcast shape."""
    width = max(float(feather), 1e-4)
    if kind == "rounded_rect":
        half = 0.5 - MARGIN
        qx = (x - 0.5).abs() - (half - CORNER)
        qy = (y - 0.5).abs() - (half - CORNER)
        outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2)
        inside = torch.clamp(torch.maximum(qx, qy), max=0)
        distance = outside + inside - CORNER  # signed distance to the rounded edge, negative inside
    elif kind == "ellipse":
        (cx, cy), (rx, ry) = ELLIPSE_CENTRE, ELLIPSE_RADII
        radius = torch.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
        distance = (radius - 1) * min(rx, ry)  # approximately the distance to the ellipse
    else:
        raise ValueError(f"no analytic mask {kind!r}; choose one of {', '.join(ANALYTIC_MASKS)}")
    return _smoothstep(-distance / width)


def _pixel_coords(size: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    c = (torch.arange(size, device=torch.device(device), dtype=torch.float32) + 0.5) / size  # pixel centres
    return c[None, :], c[:, None]  # x [1, S], y [S, 1]


def rounded_rect_mask(size: int, *, feather: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[1, 1, S, S]``: 1 inside the rounded rectangle, fading to 0 over ``feather * S`` at its edge."""
    x, y = _pixel_coords(size, device)
    return mask_at("rounded_rect", x, y, feather=feather)[None, None]


def ellipse_mask(size: int, *, feather: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[1, 1, S, S]``: an ellipse centred on the face (0.5, 0.52), radii 0.38 x 0.42 of the side, feathered."""
    x, y = _pixel_coords(size, device)
    return mask_at("ellipse", x, y, feather=feather)[None, None]
