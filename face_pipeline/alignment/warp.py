"""Batched affine warps on the images' device, with ``cv2.warpAffine`` semantics.

``M`` maps input (x, y, 1) to output coordinates; pixel centres sit at integer coordinates; outside the input is 0
(BORDER_CONSTANT). Sampling uses ``grid_sample`` (bicubic with a = -0.75 like OpenCV's INTER_CUBIC, or bilinear).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _sampling_grid(inverse: torch.Tensor, out_h: int, out_w: int, in_h: int, in_w: int) -> torch.Tensor:
    """``inverse``: ``[N, 2, 3]`` output -> input pixels. Returns the ``[N, out_h, out_w, 2]`` normalised grid."""
    device = inverse.device
    ys = torch.arange(out_h, device=device, dtype=torch.float64)
    xs = torch.arange(out_w, device=device, dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1)  # [h, w, 3]
    source = torch.einsum("nij,hwj->nhwi", inverse.to(torch.float64), points)  # [N, h, w, 2] input pixels
    scale = torch.tensor([2.0 / in_w, 2.0 / in_h], device=device, dtype=torch.float64)
    return (source * scale + scale / 2 - 1).float()  # align_corners=False normalisation


def _inverse(affines: torch.Tensor) -> torch.Tensor:
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, device=affines.device).expand(affines.shape[0], 1, 3)
    return torch.linalg.inv(torch.cat([affines.to(torch.float64), bottom], dim=1))[:, :2]


def warp_images(
    images: torch.Tensor, affines: torch.Tensor, size: tuple[int, int], *, interpolation: str = "bicubic"
) -> torch.Tensor:
    """Warp ``images`` ``[N, C, H, W]`` by ``affines`` ``[N, 2, 3]`` (input -> output) into ``[N, C, h, w]``."""
    h, w = size
    grid = _sampling_grid(_inverse(affines), h, w, images.shape[-2], images.shape[-1])
    return F.grid_sample(images, grid.to(images.dtype), mode=interpolation, padding_mode="zeros", align_corners=False)


def warp_from_one_image(
    image: torch.Tensor, affines: torch.Tensor, size: tuple[int, int], *, interpolation: str = "bicubic"
) -> torch.Tensor:
    """Warp one image ``[C, H, W]`` by K affines ``[K, 2, 3]`` into ``[K, C, h, w]`` without copying the image
    K times: the K sampling grids are laid side by side in one grid."""
    h, w = size
    k = affines.shape[0]
    grid = _sampling_grid(_inverse(affines), h, w, image.shape[-2], image.shape[-1])  # [K, h, w, 2]
    grid = grid.permute(1, 0, 2, 3).reshape(1, h, k * w, 2)  # K crops side by side
    out = F.grid_sample(image[None], grid.to(image.dtype), mode=interpolation, padding_mode="zeros",
                        align_corners=False)  # [1, C, h, K*w]
    return out.reshape(image.shape[0], h, k, w).permute(2, 0, 1, 3)
