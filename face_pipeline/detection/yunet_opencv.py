"""OpenCV's YuNet (``cv2.FaceDetectorYN`` with the 2023mar ONNX file): the fastest detector on the CPU.

OpenCV runs on the CPU one image at a time; the batch is moved there as BGR uint8, which is what it takes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DetectorWeightsCorrupt
from ..optional_deps import import_cv2
from ..weights_file import describe_failed_download
from .base import FaceDetector
from .multiscale import empty_rows

NMS_THRESHOLD, TOP_K = 0.3, 5000  # OpenCV's sample settings


@contextlib.contextmanager
def _quiet_opencv(cv2):
    """OpenCV's warnings silenced (errors still logged), the previous level restored after. ``FaceDetectorYN.create``
    sets the network's backend and target, and OpenCV 5's new graph engine warns "setPreferableTarget Targets are not
    supported by the new graph engine for now" on stderr at every load, whatever the target (the CPU here)."""
    cv_logging = getattr(getattr(cv2, "utils", None), "logging", None)  # OpenCV 4.x and 5.x
    get_level = getattr(cv_logging, "getLogLevel", None) or getattr(cv2, "getLogLevel", None)
    set_level = getattr(cv_logging, "setLogLevel", None) or getattr(cv2, "setLogLevel", None)
    if get_level is None or set_level is None:
        yield
        return
    previous = get_level()
    set_level(min(previous, int(getattr(cv_logging, "LOG_LEVEL_ERROR", 2))))
    try:
        yield
    finally:
        set_level(previous)


class OpenCVYuNetDetector(FaceDetector):
    """YuNet 2023mar through ``cv2.FaceDetectorYN``. Cheap enough to look at up to 1920 px on the long side."""

    name = "yunet_opencv"
    default_score_threshold = 0.6
    default_max_side = 1920
    reliable_face = 450.0  # measured: duplicate boxes appear on faces of ~550 px
    # measured on the shared photos turned by 0/90/180/270 degrees: upright faces score 0.93 to 0.95 (the most
    # confident of each photo), faces it calls upright although they are upside down or on their side 0.78 to 0.89
    sure_upright_score = 0.92

    def __init__(self, weights: Path, *, score_threshold: float | None = None,
                 device: str | torch.device = "cpu", max_side: int | None = None) -> None:
        # OpenCV's DNN runs on the CPU here; ``device`` is accepted for a uniform interface and ignored.
        super().__init__(score_threshold=score_threshold, device="cpu", max_side=max_side)
        cv2 = import_cv2(needed_for="the yunet_opencv detector", instead="the yunet detector (kornia, no OpenCV)")

        from .weights import WEIGHT_FILES

        failed = describe_failed_download(weights, download_hint=f"from {WEIGHT_FILES['yunet_opencv'].url} into "
                                                                 f"{weights.parent}")
        if failed is not None:
            raise DetectorWeightsCorrupt(failed)
        try:
            with _quiet_opencv(cv2):
                self.detector = cv2.FaceDetectorYN.create(str(weights), "", (320, 320), 0.6, NMS_THRESHOLD, TOP_K)
                self.detector.setInputSize((32, 32))
                self.detector.detect(np.zeros((32, 32, 3), np.uint8))  # some damaged files only fail on first use
        except cv2.error as exc:
            last = [line for line in str(exc).strip().splitlines() if line.strip()] or ["?"]
            raise DetectorWeightsCorrupt(
                f"{weights} is not a readable YuNet ONNX file ({last[-1].strip()[:200]}); it is damaged or not the "
                f"2023mar model: delete it and download it again"
            ) from exc

    def _detect_batch(self, images: torch.Tensor, threshold: float) -> list[np.ndarray]:
        # [b, 3, h, w] RGB 0..1 -> [b, h, w, 3] BGR uint8 on the CPU
        frames = (images.flip(1) * 255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        height, width = frames.shape[1:3]
        self.detector.setInputSize((width, height))
        self.detector.setScoreThreshold(threshold)
        out = []
        for frame in frames:
            _, rows = self.detector.detect(np.ascontiguousarray(frame))
            if rows is None or len(rows) == 0:
                out.append(empty_rows())
                continue
            rows = np.asarray(rows, np.float32)  # x, y, w, h, five (x, y), score
            boxes = np.concatenate([rows[:, :2], rows[:, :2] + rows[:, 2:4]], axis=1)
            out.append(np.concatenate([boxes, rows[:, 14:15], rows[:, 4:14]], axis=1))
        return out
