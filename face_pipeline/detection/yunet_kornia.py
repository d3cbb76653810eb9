"""kornia's YuNet: small, pure torch, batched on the detector's device. Weights come from our folder, never torch.hub.

``kornia.contrib.FaceDetector()`` always fetches its weights through torch.hub, so the YuNet network is built with
``pretrained=False``, our state dict is loaded into it, and kornia's detector is wrapped around that network without
running its own constructor (it is the module a host application moves between devices, and the reference the
tests hold our post-processing against). Detection runs the network and then ``batched.py`` on the whole batch:
kornia's own ``postprocess`` loops over the images and its NMS over the kept boxes, a host sync in every step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..optional_deps import import_kornia_yunet
from . import batched
from .base import FaceDetector
from .weights import load_strict, read_detector_state_dict

if TYPE_CHECKING:  # kornia is optional (Python 3.11+)
    from kornia.contrib.face_detection import FaceDetector as KorniaFaceDetector
    from kornia.models.yunet.model import YuNet

#: settings of kornia's ``FaceDetector`` (its defaults; the confidence threshold is set per call)
TOP_K, NMS_THRESHOLD, KEEP_TOP_K = 5000, 0.3, 750
MIN_SIZES = ((10, 16, 24), (32, 48), (64, 96), (128, 192, 256))  # prior box sides per feature map
STEPS: tuple[int, ...] = (8, 16, 32, 64)
VARIANCES = (0.1, 0.2)
MIN_NETWORK_SIDE = 64  # smaller inputs make YuNet's last pooling fail


def _kornia_detector(network: YuNet) -> KorniaFaceDetector:
    """A ``kornia.contrib.FaceDetector`` around an already loaded YuNet ``network``, built without a download."""
    from kornia.contrib.face_detection import FaceDetector as KorniaFaceDetector

    reference = KorniaFaceDetector.__new__(KorniaFaceDetector)
    torch.nn.Module.__init__(reference)
    # The attributes kornia's constructor sets (kornia 0.9); postprocess() reads them.
    reference.top_k, reference.nms_threshold, reference.keep_top_k = TOP_K, NMS_THRESHOLD, KEEP_TOP_K
    reference.confidence_threshold = 0.6
    reference.min_sizes = [list(sizes) for sizes in MIN_SIZES]
    reference.steps = list(STEPS)
    reference.variance = list(VARIANCES)
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
    # measured as for OpenCV's YuNet: upright 0.99999 and above, upside down but called upright 0.9957 to 0.9997
    sure_upright_score = 0.9999

    def __init__(self, weights: Path, *, score_threshold: float | None = None,
                 device: str | torch.device = "cpu", max_side: int | None = None) -> None:
        super().__init__(score_threshold=score_threshold, device=device, max_side=max_side)
        YuNet = import_kornia_yunet("kornia.models.yunet.model").YuNet  # kornia's class

        state = read_detector_state_dict(weights, what="YuNet (kornia)")
        network = YuNet("test", pretrained=False)
        load_strict(network, state, path=weights, what="kornia YuNet")
        self.detector = self.module = _kornia_detector(network).to(self.device).eval()

    keep_top_k = KEEP_TOP_K

    def _detect_table(self, images: torch.Tensor, threshold: float) -> torch.Tensor:
        height, width = images.shape[-2:]
        if min(height, width) < MIN_NETWORK_SIDE:  # its six poolings need 64 px: pad right/bottom with black
            pad = (0, max(0, MIN_NETWORK_SIDE - width), 0, max(0, MIN_NETWORK_SIDE - height))
            images = torch.nn.functional.pad(images, pad)
        height, width = images.shape[-2:]
        # kornia's input: RGB 0..255, which its preprocess turns to BGR; the network itself takes BGR 0..255
        out = self.detector.model((images * 255.0).flip(1))  # loc [B, P, 14], conf [B, P, 2], iou [B, P, 1]
        loc, conf, iou = out["loc"], out["conf"], out["iou"]
        priors = batched.cached(("priors", "yunet", height, width), lambda: self._priors(height, width),
                                loc.device, loc.dtype)  # [P, 4]
        scale = batched.cached(("scale", self.name, width, height),
                               lambda: torch.tensor([float(width), float(height)] * 7),
                               loc.device, loc.dtype)  # [14]: x, y for the box corners and five landmarks
        boxes = batched.decode_boxes(loc[..., :4], priors, VARIANCES) * scale[:4]  # [B, P, 4] pixels
        points = batched.decode_points(loc[..., 4:14], priors, VARIANCES[0]) * scale[4:]  # [B, P, 10] pixels
        scores = (conf[..., 1] * iou[..., 0].clamp(0.0, 1.0)).sqrt()  # [B, P]
        return batched.select(boxes, points, scores, threshold=threshold, nms_threshold=NMS_THRESHOLD, top_k=TOP_K)

    @staticmethod
    def _priors(height: int, width: int) -> torch.Tensor:
        PriorBox = import_kornia_yunet("kornia.models.yunet.processors").PriorBox  # kornia's class

        return PriorBox([list(s) for s in MIN_SIZES], list(STEPS), False, image_size=(height, width))()
