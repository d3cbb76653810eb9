"""Inpainting masks: from image space into each face's crop.

The caller marks the damage on the *images* (1 = damaged), as ComfyUI's MASK holds it: ``[B, H, W]`` or
``[B, 1, H, W]`` with the images' ``H, W``, or one mask (``B = 1``) for every image. Each face's crop of the mask is
cut with that face's affine, bilinear, so the crop-space mask lines up with the crop pixel for pixel.
"""

from __future__ import annotations

import torch

from ..alignment import crop_faces
from ..types import FaceBatch


def masks_in_crop_space(batch: FaceBatch, masks: torch.Tensor) -> torch.Tensor:
    """``masks`` (image space, see above) -> ``[F, 1, S, S]`` float32 in 0..1 on the crops' device, S = batch.size."""
    if not isinstance(masks, torch.Tensor):
        raise ValueError(f"inpainting masks must be a torch tensor, got {type(masks).__name__}")
    if masks.dim() == 2:
        masks = masks[None]
    if masks.dim() == 3:
        masks = masks[:, None]  # [B, 1, H, W]
    height, width = batch.image_size
    if (masks.dim() != 4 or masks.shape[1] != 1 or masks.shape[0] not in (1, batch.num_images)
            or tuple(masks.shape[-2:]) != (height, width)):
        raise ValueError(
            f"inpainting masks must be image-space [{batch.num_images}, {height}, {width}] or "
            f"[{batch.num_images}, 1, {height}, {width}] (or one mask for all images), matching the images; "
            f"got {list(masks.shape)}. Resize the mask to the image first."
        )
    if masks.is_floating_point() and not torch.isfinite(masks).all():
        raise ValueError("inpainting masks contain NaN or infinite values")
    device = batch.crops.device
    masks = masks.to(device=device, dtype=torch.float32).expand(batch.num_images, -1, -1, -1)
    return crop_faces(masks, batch.faces, batch.affines, batch.size, interpolation="bilinear")
