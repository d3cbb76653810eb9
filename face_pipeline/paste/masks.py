"""Soft face masks in crop space (``[F, 1, S, S]`` float 0..1), built analytically on the crops' device.

``rounded_rect`` (default): the crop minus a margin of 26/512 of its side (the official rectangle), with rounded
corners; ``ellipse``: an ellipse around the face of the GPEN/FFHQ templates. Both fade to 0 over ``feather`` times the
crop side (a smoothstep of the distance to the edge), so the feather scales with the face. ``parsing`` masks come
from ``parsing.py``.
"""

from __future__ import annotations

import torch

MARGIN = 26 / 512
CORNER = 0.12


def _smoothstep(t: torch.Tensor) -> torch.Tensor:
    t = t.clamp(0, 1)
    return t * t * (3 - 2 * t)


def _pixel_coords(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    c = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size  # pixel centres in 0..1
    return c[None, :], c[:, None]  # x [1, S], y [S, 1]


def rounded_rect_mask(size: int, *, feather: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[1, 1, S, S]``: 1 inside the rounded rectangle, fading to 0 over ``feather * S`` at its edge."""
    x, y = _pixel_coords(size, torch.device(device))
    half = 0.5 - MARGIN
    qx = (x - 0.5).abs() - (half - CORNER)
    qy = (y - 0.5).abs() - (half - CORNER)
    outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2)
    inside = torch.minimum(torch.maximum(qx, qy), torch.zeros(()))
    distance = outside + inside - CORNER  # signed distance to the rounded edge, negative inside
    width = max(feather, 1e-4)
    return _smoothstep(-distance / width)[None, None]


def ellipse_mask(size: int, *, feather: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[1, 1, S, S]``: an ellipse centred on the face (0.5, 0.54), radii 0.38 x 0.46 of the side, feathered."""
    x, y = _pixel_coords(size, torch.device(device))
    rx, ry = 0.38, 0.46
    radius = torch.sqrt(((x - 0.5) / rx) ** 2 + ((y - 0.54) / ry) ** 2)
    distance = (radius - 1) * min(rx, ry)  # approximately the distance to the ellipse
    width = max(feather, 1e-4)
    return _smoothstep(-distance / width)[None, None]
