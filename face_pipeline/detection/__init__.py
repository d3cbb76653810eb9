"""Face detection backends: facexlib RetinaFace (ResNet-50 / MobileNet-0.25), kornia YuNet, OpenCV YuNet.

    detector = load_detector("retinaface_resnet50", weights_dir="models/facedetection", allow_download=False)
    faces_per_image = detector.detect(images)  # images: [B, 3, H, W] RGB 0..1
"""

from __future__ import annotations

import os

import torch

from ..errors import DetectorError, DetectorWeightsCorrupt, DetectorWeightsMissing
from .base import FaceDetector
from .weights import WEIGHT_FILES, WeightFile, resolve_weights

DETECTOR_NAMES = ("retinaface_resnet50", "retinaface_mobile0.25", "yunet", "yunet_opencv")


def load_detector(
    name: str,
    *,
    weights_dir: str | os.PathLike,
    allow_download: bool = False,
    device: str | torch.device = "cpu",
    score_threshold: float | None = None,
) -> FaceDetector:
    """Build detector ``name`` (one of ``DETECTOR_NAMES``) with its weights from ``weights_dir``."""
    if name not in DETECTOR_NAMES:
        raise DetectorError(f"unknown detector {name!r}; choose one of {', '.join(DETECTOR_NAMES)}")
    path = resolve_weights(name, weights_dir=weights_dir, allow_download=allow_download)
    if name.startswith("retinaface"):
        from .retinaface import RetinaFaceDetector

        return RetinaFaceDetector(name, path, score_threshold=score_threshold, device=device)
    if name == "yunet":
        from .yunet_kornia import KorniaYuNetDetector

        return KorniaYuNetDetector(path, score_threshold=score_threshold, device=device)
    from .yunet_opencv import OpenCVYuNetDetector

    return OpenCVYuNetDetector(path, score_threshold=score_threshold)


__all__ = [
    "DETECTOR_NAMES",
    "WEIGHT_FILES",
    "WeightFile",
    "FaceDetector",
    "DetectorError",
    "DetectorWeightsMissing",
    "DetectorWeightsCorrupt",
    "load_detector",
    "resolve_weights",
]
