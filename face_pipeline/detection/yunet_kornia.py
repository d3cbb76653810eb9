"""kornia's YuNet: small, pure torch, batched on the detector's device. Weights come from our folder, never torch.hub.

``kornia.contrib.FaceDetector()`` always fetches its weights through torch.hub, so the YuNet network is built with
``pretrained=False``, our state dict is loaded into it, and kornia's detector (for its prior boxes, decoding and
NMS) is wrapped around that network without running its own constructor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import FaceDetector
from .multiscale import empty_rows
from .weights import load_strict, read_detector_state_dict

#: settings of kornia's ``FaceDetector`` (its defaults; the confidence threshold is set per call)
TOP_K, NMS_THRESHOLD, KEEP_TOP_K = 5000, 0.3, 750
MIN_NETWORK_SIDE = 64  # smaller inputs make YuNet's last pooling fail


def _kornia_detector(network: torch.nn.Module) -> torch.nn.Module:
    """A ``kornia.contrib.FaceDetector`` around an already loaded YuNet ``network``, built without a download."""
    from kornia.contrib import FaceDetector as KorniaFaceDetector

    reference = KorniaFaceDetector.__new__(KorniaFaceDetector)
    torch.nn.Module.__init__(reference)
    # The attributes kornia's constructor sets (kornia 0.9); postprocess() reads them.
    reference.top_k, reference.nms_threshold, reference.keep_top_k = TOP_K, NMS_THRESHOLD, KEEP_TOP_K
    reference.confidence_threshold = 0.6
    reference.min_sizes = [[10, 16, 24], [32, 48], [64, 96], [128, 192, 256]]
    reference.steps = [8, 16, 32, 64]
    reference.variance = [0.1, 0.2]
    reference.clip = False
    reference.config = {"name": "YuNet", "min_sizes": reference.min_sizes, "steps": reference.steps,
                        "variance": reference.variance, "clip": reference.clip}
    from kornia.geometry.bbox import nms

    reference.nms = nms
    reference.model = network
    return reference


class KorniaYuNetDetector(FaceDetector):
    """YuNet through kornia. Input to kornia: RGB float in 0..255 (it flips to BGR itself).

    This YuNet places faces above ~350 px wrongly (it splits them into two or three boxes), so it trusts faces up
    to 300 working pixels and finds larger ones on coarser copies (``multiscale.py``).
    """

    name = "yunet"
    # real faces score above 0.99 with these weights, while black, noisy or smooth frames give false faces of up
    # to 0.85 (measured on the test photos): 0.9 keeps the first and drops the second
    default_score_threshold = 0.9
    default_max_side = 1280
    reliable_face = 300.0

    def __init__(self, weights: Path, *, score_threshold: float | None = None,
                 device: str | torch.device = "cpu", max_side: int | None = None) -> None:
        super().__init__(score_threshold=score_threshold, device=device, max_side=max_side)
        from kornia.models.yunet.model import YuNet

        state = read_detector_state_dict(weights, what="YuNet (kornia)")
        network = YuNet("test", pretrained=False)
        load_strict(network, state, path=weights, what="kornia YuNet")
        self.detector = self.module = _kornia_detector(network).to(self.device).eval()

    def _detect_batch(self, images: torch.Tensor, threshold: float) -> list[np.ndarray]:
        self.detector.confidence_threshold = threshold
        height, width = images.shape[-2:]
        if min(height, width) < MIN_NETWORK_SIDE:  # its six poolings need 64 px: pad right/bottom with black
            pad = (0, max(0, MIN_NETWORK_SIDE - width), 0, max(0, MIN_NETWORK_SIDE - height))
            images = torch.nn.functional.pad(images, pad)
        found = self.detector(images * 255.0)  # b tensors [N, 15]: x1 y1 x2 y2, five (x, y), score
        out = []
        for rows in found:
            rows = rows.detach().float().cpu().numpy()
            if len(rows) == 0:
                out.append(empty_rows())
                continue
            out.append(np.concatenate([rows[:, :4], rows[:, 14:15], rows[:, 4:14]], axis=1).astype(np.float32))
        return out
