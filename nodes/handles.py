"""The custom socket types the pack passes between its nodes, and what travels in them."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

GPEN_MODEL = "GPEN_MODEL"
GPEN_FACE_DETECTOR = "GPEN_FACE_DETECTOR"
GPEN_FACES = "GPEN_FACES"  # a face_pipeline.types.FaceBatch


@dataclass(frozen=True)
class GPENModelHandle:
    """A loaded GPEN wrapped in ComfyUI's ModelPatcher (so ComfyUI loads and offloads it with everything else)."""

    patcher: object  # comfy.model_patcher.ModelPatcher around a gpen_arch.GPEN
    file_name: str
    size: int
    dtype: object  # torch.dtype the weights were cast to


@dataclass(frozen=True)
class DetectorHandle:
    """A face detector (its name and options are its own: ``detector.name``) under ComfyUI's model management."""

    detector: object = field(repr=False)  # face_pipeline.detection.FaceDetector
    patcher: object = field(default=None, repr=False)  # ModelPatcher of its network (None: OpenCV)
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)
