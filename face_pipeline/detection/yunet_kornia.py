"""kornia's YuNet: small, pure torch, runs on the GPU. Built without kornia's own download, weights from our folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DetectorWeightsCorrupt
from .base import FaceDetector


class KorniaYuNetDetector(FaceDetector):
    """YuNet via ``kornia.contrib.FaceDetector``'s post-processing.

    YuNet misreads very large faces at full resolution (it splits them into wrong boxes), and loses small faces when
    downscaled, so it runs at two working sizes (long side 1280 and 640) and the passes are merged.
    """

    default_threshold = 0.6
    working_sides = (1280, 640)

    def __init__(self, weights: Path, *, score_threshold: float | None = None,
                 device: str | torch.device = "cpu") -> None:
        super().__init__(score_threshold=score_threshold, device=device)
        from kornia.contrib.face_detection import FaceDetector as KorniaFaceDetector
        from kornia.models.yunet.model import YuNet

        self.name = "yunet"
        try:
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
            model = YuNet("test", pretrained=False)
            model.load_state_dict(state, strict=True)
        except Exception as exc:  # damaged file or wrong file: torch raises several types
            raise DetectorWeightsCorrupt(
                f"{weights} is not a readable YuNet weight file ({type(exc).__name__}: {str(exc)[:200]}); "
                f"delete it and download it again"
            ) from exc

        class _Detector(KorniaFaceDetector):
            def __init__(self, yunet: torch.nn.Module) -> None:  # kornia's own __init__ would download weights
                torch.nn.Module.__init__(self)
                probe = KorniaFaceDetector.__new__(KorniaFaceDetector)
                self.top_k, self.nms_threshold, self.keep_top_k = 5000, 0.3, 750
                self.confidence_threshold = 0.3
                self.min_sizes = [[10, 16, 24], [32, 48], [64, 96], [128, 192, 256]]
                self.steps = [8, 16, 32, 64]
                self.variance = [0.1, 0.2]
                self.clip = False
                self.config = {"name": "YuNet", "min_sizes": self.min_sizes, "steps": self.steps,
                               "variance": self.variance, "clip": self.clip}
                del probe
                from kornia.geometry.bbox import nms

                self.nms = nms
                self.model = yunet

        self.detector = _Detector(model).to(self.device).eval()

    def _detect_one(self, image: torch.Tensor, threshold: float) -> np.ndarray:
        self.detector.confidence_threshold = threshold
        x = image[None].to(self.device, torch.float32) * 255.0  # RGB 0..255, as kornia's detector takes it
        rows = self.detector(x)[0].detach().float().cpu().numpy()  # x1 y1 x2 y2, 5 x (x, y), score
        if len(rows) == 0:
            return np.zeros((0, 15), np.float32)
        return np.concatenate([rows[:, :4], rows[:, 14:15], rows[:, 4:14]], axis=1).astype(np.float32)
