"""Face detection backends: facexlib RetinaFace (ResNet-50 / MobileNet-0.25), kornia YuNet, OpenCV YuNet.

    detector = load_detector("retinaface_resnet50", weights_dir="models/facedetection", allow_download=False)
    faces_per_image = detector.detect(images)  # images: [B, 3, H, W] RGB 0..1 -> B lists of DetectedFace

Files: ``base.py`` (the ``FaceDetector`` interface, input checks, working resolutions), ``multiscale.py`` (the
resolution pyramid and the merge of its passes), ``rotations.py`` (faces on their side: ``detect_faces`` retries
on the image turned by 90/180/270 degrees), ``batched.py`` (the torch backends' decode, score filter and NMS for a
whole batch on its device), ``weights.py`` (weight files: table, lookup, verified download),
one file per backend, ``bundled/`` (the OpenCV YuNet weights shipped with the pack, and their licence). Backend
libraries are imported only when a detector is built.
"""

from __future__ import annotations

import os

import torch

from ..errors import DetectorError, DetectorWeightsCorrupt, DetectorWeightsMissing
from .base import FaceDetector
from .rotations import ROTATION_MODES, detect_faces
from .weights import BUNDLED_DETECTORS, WEIGHT_FILES, WeightFile, bundled_weights, resolve_weights

DETECTOR_NAMES = ("retinaface_resnet50", "retinaface_mobile0.25", "yunet", "yunet_opencv")
#: The default of the CLI and the nodes: its weights ship with the pack, so it works offline with nothing downloaded.
DEFAULT_DETECTOR = "yunet_opencv"


def load_detector(
    name: str,
    *,
    weights_dir: str | os.PathLike,
    allow_download: bool = False,
    device: str | torch.device = "cpu",
    score_threshold: float | None = None,
    max_side: int | None = None,
) -> FaceDetector:
    """Build detector ``name`` (one of ``DETECTOR_NAMES``) with its weight file from ``weights_dir`` (the OpenCV YuNet
    file falls back to the copy shipped with the pack when ``weights_dir`` does not have it).

    ``allow_download``: fetch a missing file from its official URL into ``weights_dir`` (sha256-checked).
    ``device``: where the torch backends run (OpenCV's YuNet always runs on the CPU).
    ``score_threshold``: the default for ``detect`` (RetinaFace 0.9 as in official GPEN, YuNet 0.6).
    ``max_side``: long side of the first working copy; larger images are downscaled for detection (default:
    RetinaFace the official rule, above 1500 px -> 1000 px; kornia YuNet 1280; OpenCV YuNet 1920). Raise it to find
    small faces on very large frames, at the cost of time.
    Raises ``DetectorError`` for an unknown name, ``DetectorWeightsMissing`` / ``DetectorWeightsCorrupt`` for the file,
    ``MissingDependencyError`` when the library a detector needs cannot be imported (facexlib for RetinaFace, kornia
    0.9 for yunet, OpenCV for yunet_opencv).
    """
    if name not in DETECTOR_NAMES:
        raise DetectorError(f"unknown detector {name!r}; choose one of {', '.join(DETECTOR_NAMES)}")
    if name.startswith("retinaface"):
        from .retinaface import facexlib_module

        facexlib_module(name)  # before any download: says why facexlib cannot be imported and what to do
    elif name == "yunet":
        from ..optional_deps import import_kornia_yunet

        import_kornia_yunet("kornia.models.yunet.model")  # likewise for kornia 0.9
    path = resolve_weights(name, weights_dir=weights_dir, allow_download=allow_download)
    if name.startswith("retinaface"):
        from .retinaface import RetinaFaceDetector

        return RetinaFaceDetector(name, path, score_threshold=score_threshold, device=device, max_side=max_side)
    if name == "yunet":
        from .yunet_kornia import KorniaYuNetDetector

        return KorniaYuNetDetector(path, score_threshold=score_threshold, device=device, max_side=max_side)
    from .yunet_opencv import OpenCVYuNetDetector

    return OpenCVYuNetDetector(path, score_threshold=score_threshold, device=device, max_side=max_side)


__all__ = [
    "BUNDLED_DETECTORS",
    "DEFAULT_DETECTOR",
    "DETECTOR_NAMES",
    "WEIGHT_FILES",
    "WeightFile",
    "FaceDetector",
    "ROTATION_MODES",
    "detect_faces",
    "DetectorError",
    "DetectorWeightsMissing",
    "DetectorWeightsCorrupt",
    "bundled_weights",
    "load_detector",
    "resolve_weights",
]
