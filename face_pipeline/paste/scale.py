"""Output scale of paste-back: 1x, 2x or 4x the input, or ``auto`` (enough for the largest face's restored detail).

A restored crop of side S covers a face region that is S / zoom image pixels wide, where ``zoom`` (crop pixels per
image pixel) is the scale of the image -> crop similarity. Pasting at output scale ``s`` keeps every restored pixel
when ``s >= zoom``; ``auto`` picks the smallest such ``s`` in {1, 2, 4} for the largest face (4 when even 4 is less),
then halves it until the output's long side fits in ``max_output_size``.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import PasteError
from ..types import FaceBatch

SCALES = (1, 2, 4)


def face_zoom(batch: FaceBatch) -> list[float]:
    """Per face: restored-crop pixels per image pixel (how much the alignment enlarged the face)."""
    matrices = batch.affines.detach().cpu().numpy()
    if batch.face_sizes is not None:  # each face's matrix maps to its own side, at which it is restored
        return [float(math.sqrt(abs(np.linalg.det(m[:, :2])))) for m in matrices]
    restored = batch.restored.shape[-1] if batch.restored is not None else batch.size
    factor = restored / batch.size
    return [float(math.sqrt(abs(np.linalg.det(m[:, :2])))) * factor for m in matrices]


def choose_scale(batch: FaceBatch, scale: int | str, *, max_output_size: int) -> int:
    """The output scale for ``scale`` (1, 2, 4 or ``"auto"``); an explicit scale whose output would exceed
    ``max_output_size`` on its long side is an error (auto is capped instead)."""
    long_side = max(batch.image_size)
    if scale == "auto":
        zooms = face_zoom(batch)
        needed = max(zooms) if zooms else 1.0
        chosen = next((s for s in SCALES if s >= needed - 1e-6), SCALES[-1])
        while chosen > 1 and long_side * chosen > max_output_size:
            chosen //= 2
        return chosen
    try:
        chosen = int(scale)
    except (TypeError, ValueError):
        chosen = -1
    if chosen not in SCALES or (isinstance(scale, float) and scale != chosen):
        raise PasteError(f"output scale must be 1, 2, 4 or 'auto', got {scale!r}")
    if chosen > 1 and long_side * chosen > max_output_size:
        raise PasteError(
            f"output scale {chosen} would make images of {long_side * chosen} px on their long side, above "
            f"max_output_size {max_output_size}; choose a smaller scale or 'auto', or raise max_output_size")
    return chosen
