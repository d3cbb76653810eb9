"""Pasting restored faces back: each restored crop (at its full model resolution) is warped straight into the
output image, which may be 2x or 4x the input, so a 2048 face keeps its detail instead of being squeezed back
into the input's pixels first."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..alignment.warp import warp_images
from ..errors import PasteError
from ..types import FaceBatch, PasteResult
from .color import match_color
from .masks import ellipse_mask, rounded_rect_mask
from .parsing import parsing_mask

logger = logging.getLogger(__name__)

MASK_TYPES = ("rounded_rect", "ellipse", "parsing", "parsing_no_hair")
SCALES = (1, 2, 4)


def face_zoom(batch: FaceBatch) -> list[float]:
    """Per face: crop pixels per image pixel (how much the alignment enlarged it)."""
    a = batch.affines.numpy()
    return [float(math.sqrt(abs(np.linalg.det(m[:, :2])))) for m in a] if len(a) else []


def choose_scale(batch: FaceBatch, scale: int | str, *, max_output_size: int) -> int:
    """The output scale: 1, 2 or 4, or for ``"auto"`` the smallest of them at which the largest face keeps its
    native restored resolution, capped so the output's long side stays within ``max_output_size``."""
    long_side = max(batch.image_size)
    if scale != "auto":
        try:
            scale = int(scale)
        except (TypeError, ValueError):
            scale = -1
        if scale not in SCALES:
            raise PasteError(f"output scale must be 1, 2, 4 or 'auto', got {scale!r}")
        return scale
    zooms = face_zoom(batch)
    needed = max(zooms) if zooms else 1.0
    chosen = next((s for s in SCALES if s >= needed - 1e-6), SCALES[-1])
    while chosen > 1 and long_side * chosen > max_output_size:
        chosen //= 2
    return chosen


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == size:
        return images.float()
    return F.interpolate(images.float(), size=size, mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)


def crop_masks(batch: FaceBatch, faces: torch.Tensor, *, mask_type: str, feather: float,
               parsing_dir=None) -> torch.Tensor:
    """``[F, 1, S, S]`` masks for the restored ``faces``."""
    size = faces.shape[-1]
    if mask_type == "rounded_rect":
        return rounded_rect_mask(size, feather=feather, device=faces.device).expand(len(faces), 1, size, size)
    if mask_type == "ellipse":
        return ellipse_mask(size, feather=feather, device=faces.device).expand(len(faces), 1, size, size)
    if mask_type in ("parsing", "parsing_no_hair"):
        return parsing_mask(faces, parsing_dir=parsing_dir, keep_hair=mask_type == "parsing")
    raise PasteError(f"unknown mask type {mask_type!r}; choose one of {', '.join(MASK_TYPES)}")


def _footprint(matrix: np.ndarray, size: int, out_h: int, out_w: int) -> tuple[int, int, int, int] | None:
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
    pts = corners @ matrix.T
    x0, y0 = np.floor(pts.min(0)).astype(int) - 2
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, out_w), min(y1, out_h)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def paste_faces(
    batch: FaceBatch,
    *,
    images: torch.Tensor | None = None,
    mask_type: str = "rounded_rect",
    feather: float = 0.1,
    color_correction: bool = True,
    scale: int | str = 1,
    max_output_size: int = 8192,
    background: torch.Tensor | None = None,
    parsing_dir=None,
) -> PasteResult:
    """Paste ``batch.restored`` onto ``images`` (default: the batch's source images), see the module docstring.

    ``background``: optional ``[B, 3, h, w]`` 0..1 images used instead of the resized source (resized to the output
    size if needed), e.g. from an upscale model. Returns images ``[B, 3, H*s, W*s]``, the combined mask
    ``[B, H*s, W*s]`` and per-face masks ``[F, H*s, W*s]``.
    """
    if batch.restored is None:
        raise PasteError("these faces have not been restored yet: run the restore step before pasting")
    images = batch.images if images is None else images
    if images.dim() != 4 or images.shape[0] != batch.num_images or tuple(images.shape[-2:]) != batch.image_size:
        raise PasteError(
            f"these faces were detected on a batch of {batch.num_images} images of "
            f"{batch.image_size[1]}x{batch.image_size[0]}; got images of shape {list(images.shape)} "
            f"([B, 3, H, W]). Paste onto the same images the faces came from."
        )
    if not 0 <= feather <= 0.5:
        raise PasteError(f"feather must be between 0 and 0.5 of the face size, got {feather}")
    s = choose_scale(batch, scale, max_output_size=max_output_size)
    height, width = batch.image_size
    out_h, out_w = height * s, width * s
    device = images.device
    if background is not None:
        if background.dim() != 4 or background.shape[0] != batch.num_images:
            raise PasteError(f"the background must be [{batch.num_images}, 3, h, w], got {list(background.shape)}")
        base = _resize(background.to(device), (out_h, out_w))
    else:
        base = _resize(images, (out_h, out_w))
    faces = batch.restored.to(device)
    size = faces.shape[-1]
    crops = batch.crops.to(device)
    if crops.shape[-1] != size:
        crops = F.interpolate(crops, size=(size, size), mode="bicubic", align_corners=False).clamp_(0, 1)
    masks = crop_masks(batch, faces, mask_type=mask_type, feather=feather, parsing_dir=parsing_dir)
    if color_correction and len(faces):
        faces = match_color(faces, crops, masks)

    out = base.clone()
    full_mask = torch.zeros((batch.num_images, out_h, out_w), device=device)
    face_masks = torch.zeros((batch.num_faces, out_h, out_w), device=device)
    to_output = np.array([[s, 0, (s - 1) / 2], [0, s, (s - 1) / 2], [0, 0, 1]], dtype=np.float64)
    zooms = face_zoom(batch)
    for i, face in enumerate(batch.faces):
        both = torch.cat([faces[i:i + 1], masks[i:i + 1].float()], dim=1)  # warp image and mask together
        # crop pixels per output pixel; above 2 the warp would alias, so shrink the crop first (antialiased)
        shrink = zooms[i] * size / batch.size / s
        face_size = size
        if shrink > 2.0:
            face_size = max(16, round(size / shrink))
            both = F.interpolate(both, size=(face_size, face_size), mode="bicubic", align_corners=False,
                                 antialias=True)
        crop_scale = batch.size / face_size  # stored-crop pixels per pixel of what we warp
        inverse = np.vstack([batch.inverse_affines[i].numpy(), [0, 0, 1]])
        from_restored = np.diag([crop_scale, crop_scale, 1.0])
        from_restored[:2, 2] = (crop_scale - 1) / 2
        matrix = (to_output @ inverse @ from_restored)[:2]  # warped-crop pixels -> output pixels
        box = _footprint(matrix, face_size, out_h, out_w)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        local = matrix.copy()
        local[:, 2] -= (x0, y0)
        affine = torch.tensor(local, dtype=torch.float64)[None]
        warped = warp_images(both, affine, (y1 - y0, x1 - x0))[0]
        face_img, face_mask = warped[:3].clamp(0, 1), warped[3].clamp(0, 1)
        b = face.image_index
        face_masks[i, y0:y1, x0:x1] = face_mask
        region_mask = full_mask[b, y0:y1, x0:x1]
        wins = face_mask > region_mask  # overlapping faces: the larger mask value wins per pixel
        region_mask[wins] = face_mask[wins]
        region = out[b, :, y0:y1, x0:x1]
        region[:, wins] = face_img[:, wins]
    out = base * (1 - full_mask[:, None]) + out * full_mask[:, None]
    return PasteResult(images=out.clamp_(0, 1), mask=full_mask, face_masks=face_masks, scale=s)
