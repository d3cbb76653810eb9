"""facexlib's RetinaFace (ResNet-50, the official GPEN detector, or MobileNet-0.25), loaded from our folder."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..errors import DetectorWeightsCorrupt
from ..image import to_bgr_uint8
from .base import FaceDetector

logger = logging.getLogger(__name__)

NETWORKS = {"retinaface_resnet50": "resnet50", "retinaface_mobile0.25": "mobile0.25"}


class RetinaFaceDetector(FaceDetector):
    """RetinaFace through facexlib's ``RetinaFace`` class; weights read with ``weights_only=True``.

    Like the official GPEN pipeline, an image with a long side above 1500 px is detected at 1000 px (SPEC 6.2).
    """

    default_threshold = 0.8
    working_sides = (1500,)

    def __init__(self, name: str, weights: Path, *, score_threshold: float | None = None,
                 device: str | torch.device = "cpu") -> None:
        super().__init__(score_threshold=score_threshold, device=device)
        from facexlib.detection.retinaface import RetinaFace

        self.name = name
        try:
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises RuntimeError/UnpicklingError/EOFError for damaged files
            raise DetectorWeightsCorrupt(
                f"{weights} is not a readable {name} weight file ({type(exc).__name__}: {str(exc)[:200]}); "
                f"delete it and download it again"
            ) from exc
        if not isinstance(state, dict):
            raise DetectorWeightsCorrupt(f"{weights} does not hold a state dict")
        state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
        model = RetinaFace(network_name=NETWORKS[name], half=False, device=self.device)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise DetectorWeightsCorrupt(
                f"{weights.name} does not fit the {name} network ({str(exc).splitlines()[0]}); is it the right file?"
            ) from exc
        self.model = model.eval()

    def _detect_multiscale(self, image: torch.Tensor, threshold: float) -> np.ndarray:
        long_side = max(image.shape[-2:])
        self.working_sides = (1000,) if long_side > 1500 else (long_side,)  # the official rule
        return super()._detect_multiscale(image, threshold)

    def _detect_one(self, image: torch.Tensor, threshold: float) -> np.ndarray:
        bgr = to_bgr_uint8(image)
        rows = self.model.detect_faces(bgr, conf_threshold=threshold, nms_threshold=0.4, use_origin_size=True)
        if rows is None or len(rows) == 0:
            return np.zeros((0, 15), np.float32)
        return np.asarray(rows, dtype=np.float32).reshape(-1, 15)  # box(4), score, 5 x (x, y)
