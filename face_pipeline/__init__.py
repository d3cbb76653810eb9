"""face_pipeline: detect, align, restore and paste back faces, independent of ComfyUI.

Folders by stage: ``detection/`` (RetinaFace, YuNet), ``selection.py``, ``alignment/`` (templates, similarity
transforms, warps), ``restoration/`` (batched model runs), ``paste/`` (masks, colour, compositing at 1x/2x/4x),
``video/`` (tracking and smoothing across frames), ``pipeline.py`` (the whole chain). Records that travel between
stages are in ``types.py``; images are ``[B, 3, H, W]`` float32 RGB in 0..1 throughout.

The model is duck-typed (a ``gpen_arch.GPEN``: ``.config.size``, RGB in [-1, 1]), so this package imports nothing
from ``gpen_arch`` or ComfyUI.
"""

from .errors import (
    DetectorError,
    DetectorWeightsCorrupt,
    DetectorWeightsMissing,
    FacePipelineError,
    InvalidImageError,
    PasteError,
    RestoreError,
    RestoreOutOfMemory,
)
from .types import LANDMARK_NAMES, DetectedFace, FaceBatch, PasteResult

__all__ = [
    "LANDMARK_NAMES", "DetectedFace", "FaceBatch", "PasteResult",
    "FacePipelineError", "InvalidImageError", "DetectorError", "DetectorWeightsMissing", "DetectorWeightsCorrupt",
    "RestoreError", "RestoreOutOfMemory", "PasteError",
]
