"""``--mode inpaint``'s damage masks read from a folder: a mask image named like the input, white = damaged."""

from __future__ import annotations

from pathlib import Path

import torch

from face_pipeline.errors import InvalidImageError
from face_pipeline.image import IMAGE_SUFFIXES, load_image


def mask_path(folder: Path, relative: Path) -> Path | None:
    """The inpainting mask named like the input (any image suffix) in ``folder``, or None."""
    candidates = [folder / relative] + [(folder / relative).with_suffix(s) for s in IMAGE_SUFFIXES]
    return next((c for c in candidates if c.is_file()), None)


def load_mask(folder: Path, relative: Path, shape: tuple[int, int]) -> torch.Tensor:
    """``[1, H, W]`` 0..1 inpainting mask named like the input, white = damaged."""
    path = mask_path(folder, relative)
    if path is None:
        raise InvalidImageError(f"no inpainting mask for {relative} in {folder}")
    mask = load_image(path)[:, 0]
    if tuple(mask.shape[-2:]) != shape:
        raise InvalidImageError(f"mask {path.name} is {mask.shape[-1]}x{mask.shape[-2]}, its image "
                                f"{shape[1]}x{shape[0]}")
    return mask
