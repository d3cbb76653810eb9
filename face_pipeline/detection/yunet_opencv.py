"""OpenCV's YuNet (``cv2.FaceDetectorYN`` with the 2023mar ONNX file): the fastest detector on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DetectorWeightsCorrupt
from ..image import to_bgr_uint8
from .base import FaceDetector


class OpenCVYuNetDetector(FaceDetector):
    default_threshold = 0.6
    working_sides = (1920,)

    def __init__(self, weights: Path, *, score_threshold: float | None = None,
                 device: str | torch.device = "cpu") -> None:
        super().__init__(score_threshold=score_threshold, device=device)
        import cv2

        self.name = "yunet_opencv"
        try:
            self.detector = cv2.FaceDetectorYN.create(str(weights), "", (320, 320), 0.5, 0.3, 5000)
        except cv2.error as exc:
            raise DetectorWeightsCorrupt(
                f"{weights} is not a readable YuNet ONNX file ({str(exc).strip().splitlines()[-1][:200]}); "
                f"delete it and download it again"
            ) from exc

    def _detect_one(self, image: torch.Tensor, threshold: float) -> np.ndarray:
        bgr = to_bgr_uint8(image)
        h, w = bgr.shape[:2]
        self.detector.setInputSize((w, h))
        self.detector.setScoreThreshold(threshold)
        _, rows = self.detector.detect(bgr)
        if rows is None or len(rows) == 0:
            return np.zeros((0, 15), np.float32)
        rows = np.asarray(rows, dtype=np.float32)  # x, y, w, h, 5 x (x, y), score
        boxes = np.concatenate([rows[:, :2], rows[:, :2] + rows[:, 2:4]], axis=1)
        return np.concatenate([boxes, rows[:, 14:15], rows[:, 4:14]], axis=1)
