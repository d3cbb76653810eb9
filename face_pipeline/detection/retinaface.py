"""facexlib's RetinaFace (ResNet-50, the official GPEN detector, or MobileNet-0.25), with weights from our folder.

facexlib's ``init_detection_model`` would download into its own folder when the file is not where it looks, so the
network is built from facexlib's ``RetinaFace`` class and our file is loaded into it with ``weights_only=True``.
Detection goes through ``RetinaFace.batched_detect_faces``: the batch stays on the detector's device.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from .base import FaceDetector
from .multiscale import empty_rows
from .weights import load_strict, read_detector_state_dict

logger = logging.getLogger(__name__)

NETWORKS = {"retinaface_resnet50": "resnet50", "retinaface_mobile0.25": "mobile0.25"}
OFFICIAL_LIMIT, OFFICIAL_SIDE = 1500, 1000  # official GPEN: a long side above 1500 px is detected at 1000 px
NMS_THRESHOLD = 0.4  # as in the official pipeline


class RetinaFaceDetector(FaceDetector):
    """RetinaFace via facexlib. Score threshold 0.9 and NMS 0.4 as in the official GPEN pipeline.

    Working size: the official rule (long side above 1500 px -> 1000 px, else as is) unless ``max_side`` is given,
    plus coarser passes for faces too large for the network (``multiscale.py``).
    """

    default_score_threshold = 0.9
    reliable_face = 450.0  # measured: duplicate boxes appear on faces of ~600 px

    def __init__(self, name: str, weights: Path, *, score_threshold: float | None = None,
                 device: str | torch.device = "cpu", max_side: int | None = None) -> None:
        super().__init__(score_threshold=score_threshold, device=device, max_side=max_side)
        from facexlib.detection.retinaface import RetinaFace

        if name not in NETWORKS:
            raise ValueError(f"not a RetinaFace detector: {name!r}; choose one of {', '.join(NETWORKS)}")
        self.name = name
        state = read_detector_state_dict(weights, what=name)
        with warnings.catch_warnings():  # torchvision's resnet50(pretrained=False) deprecation notice
            warnings.simplefilter("ignore", UserWarning)
            model = RetinaFace(network_name=NETWORKS[name], half=False, device=self.device)
        load_strict(model, state, path=weights, what=name)
        self.model = self.module = model.to(self.device).eval()

    def _moved_to(self, device: torch.device) -> None:
        # facexlib keeps its device and the mean colour as plain attributes, outside the module's buffers
        self.model.device = device
        self.model.mean_tensor = self.model.mean_tensor.to(device)

    def first_side(self, long_side: int) -> int:
        if self.max_side is not None:
            return min(long_side, self.max_side)
        return OFFICIAL_SIDE if long_side > OFFICIAL_LIMIT else long_side

    def _detect_batch(self, images: torch.Tensor, threshold: float) -> list[np.ndarray]:
        # [b, 3, h, w] RGB 0..1 -> [b, h, w, 3] BGR 0..255 on uint8 levels, the input facexlib expects
        frames = torch.round(images.flip(1) * 255.0).permute(0, 2, 3, 1)
        boxes, points = self.model.batched_detect_faces(
            frames, conf_threshold=threshold, nms_threshold=NMS_THRESHOLD, use_origin_size=True)
        out = []
        for box, point in zip(boxes, points):
            if len(box) == 0:
                out.append(empty_rows())
                continue
            # facexlib: box rows x1, y1, x2, y2, score; landmark rows x1, y1, ..., x5, y5 (interleaved)
            out.append(np.concatenate([np.asarray(box, np.float32).reshape(-1, 5),
                                       np.asarray(point, np.float32).reshape(-1, 10)], axis=1))
        return out
