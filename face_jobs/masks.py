"""Masks given to a file job as image files (white = 1): ``--inpaint-masks`` (the damage, ``--mode inpaint``),
``--region-masks`` (only the faces in the white part are restored) and ``--protect-masks`` (the white part keeps the
original pixels), as the nodes take them as MASK inputs.

Each flag names a folder, with one mask per input named like it (any image suffix: ``a.jpg``'s mask may be
``a.png``; subfolders as the inputs'), or one mask image used for every input. An input whose mask the folder lacks
is skipped with the reason (``run.probe_inputs``), never restored without it. Inpainting masks must have their
image's size (the damage is marked pixel by pixel); region and protect masks may have any size (drawn on a preview,
say) and are resized as the nodes' masks are (``face_pipeline.region.masks_for``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from face_pipeline.errors import InvalidImageError
from face_pipeline.image import IMAGE_SUFFIXES, load_image


@dataclass(frozen=True)
class MaskFiles:
    """Where one kind of mask comes from: ``path``, a folder of masks named like the inputs or one mask file."""

    flag: str  # the CLI flag that gave it, for messages: "--region-masks"
    what: str  # "region mask"
    path: Path
    same_size: bool = False  # the mask must have its image's size (inpainting), else it is resized

    def find(self, relative: Path) -> Path | None:
        """The mask of the input named ``relative`` (under its input folder), or None when there is none."""
        if self.path.is_file():
            return self.path
        candidates = [self.path / relative] + [(self.path / relative).with_suffix(s) for s in IMAGE_SUFFIXES]
        return next((c for c in candidates if c.is_file()), None)

    def missing(self, relative: Path) -> str | None:
        """Why the input named ``relative`` cannot be processed for want of its mask (None: it has one)."""
        return None if self.find(relative) is not None else f"no {self.what} for {relative} in {self.path}"

    def load(self, relative: Path, shape: tuple[int, int]) -> torch.Tensor:
        """``[1, H, W]`` 0..1 mask of the input named ``relative`` whose image is ``shape`` = (H, W): at that size
        for inpainting masks (``InvalidImageError`` otherwise), at its own size for the others."""
        path = self.find(relative)
        if path is None:
            raise InvalidImageError(f"no {self.what} for {relative} in {self.path}")
        mask = load_image(path)[:, 0]
        if self.same_size and tuple(mask.shape[-2:]) != tuple(shape):
            raise InvalidImageError(f"{self.what} {path.name} is {mask.shape[-1]}x{mask.shape[-2]}, its image "
                                    f"{shape[1]}x{shape[0]}")
        return mask


def mask_files(*, inpaint: str | None = None, region: str | None = None,
               protect: str | None = None) -> dict[str, MaskFiles]:
    """The masks a job was given, by kind ("inpaint", "region", "protect"; absent when not given)."""
    given = {"inpaint": MaskFiles("--inpaint-masks", "inpainting mask", Path(inpaint), same_size=True)
             if inpaint else None,
             "region": MaskFiles("--region-masks", "region mask", Path(region)) if region else None,
             "protect": MaskFiles("--protect-masks", "protect mask", Path(protect)) if protect else None}
    return {kind: files for kind, files in given.items() if files is not None}
