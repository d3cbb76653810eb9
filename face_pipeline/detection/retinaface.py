"""facexlib's RetinaFace (ResNet-50, the official GPEN detector, or MobileNet-0.25), with weights from our folder.

facexlib's ``init_detection_model`` would download into its own folder when the file is not where it looks, so the
network is built from facexlib's ``RetinaFace`` class and our file is loaded into it with ``weights_only=True``.
Detection runs that network on the whole batch and decodes, filters and suppresses on its device (``batched.py``):
facexlib's ``batched_detect_faces`` copies each image's boxes to the CPU for its NMS, a host sync per image, and
rebuilds its prior boxes in Python on every call.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from ..optional_deps import import_facexlib
from . import batched
from .base import FaceDetector
from .weights import load_strict, read_detector_state_dict

logger = logging.getLogger(__name__)

NETWORKS = {"retinaface_resnet50": "resnet50", "retinaface_mobile0.25": "mobile0.25"}


def facexlib_module(name: str, module: str = "facexlib.detection.retinaface"):
    """facexlib's ``module`` for detector ``name``; ``MissingDependencyError`` (why, how to install, what to choose
    instead) when facexlib cannot be imported. Called before the weights are looked up, so nothing is downloaded for a
    detector that cannot run."""
    return import_facexlib(module, needed_for=f"the {name} detector",
                           instead="the yunet_opencv detector (the default, shipped with the pack) or yunet")
OFFICIAL_LIMIT, OFFICIAL_SIDE = 1500, 1000  # official GPEN: a long side above 1500 px is detected at 1000 px
NMS_THRESHOLD = 0.4  # as in the official pipeline


class RetinaFaceDetector(FaceDetector):
    """RetinaFace via facexlib. Score threshold 0.9 and NMS 0.4 as in the official GPEN pipeline.

    Working size: the official rule (long side above 1500 px -> 1000 px, else as is) unless ``max_side`` is given,
    plus coarser passes for faces too large for the network (``multiscale.py``).
    """

    default_score_threshold = 0.9
    reliable_face = 450.0  # measured: duplicate boxes appear on faces of ~600 px
    # measured as for YuNet: upright 0.9989 and above (mobile0.25); it finds turned faces with turned landmarks,
    # which send the image to the turned copies anyway, so the check is for the doubtful ones only
    sure_upright_score = 0.998

    def __init__(self, name: str, weights: Path, *, score_threshold: float | None = None,
                 device: str | torch.device = "cpu", max_side: int | None = None) -> None:
        super().__init__(score_threshold=score_threshold, device=device, max_side=max_side)
        RetinaFace = facexlib_module(name).RetinaFace  # facexlib's class

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

    def _detect_table(self, images: torch.Tensor, threshold: float) -> torch.Tensor:
        # [b, 3, h, w] RGB 0..1 -> BGR on 0..255 uint8 levels minus the mean colour, facexlib's input
        inputs = torch.round(images.flip(1) * 255.0) - self.model.mean_tensor
        height, width = inputs.shape[-2:]
        loc, conf, landmarks = self.model(inputs)  # [b, P, 4], [b, P, 2] (softmax), [b, P, 10]
        loc, landmarks = loc.float(), landmarks.float()
        priors = batched.cached(("priors", self.name, height, width), lambda: self._priors(height, width),
                                loc.device, loc.dtype)  # [P, 4]
        scale = batched.cached(("scale", self.name, width, height),
                               lambda: torch.tensor([float(width), float(height)] * 5),
                               loc.device, loc.dtype)  # [10]
        variances = tuple(self.model.cfg["variance"])
        boxes = batched.decode_boxes(loc, priors, variances) * scale[:4]  # [b, P, 4] pixels
        points = batched.decode_points(landmarks, priors, variances[0]) * scale  # [b, P, 10] pixels
        return batched.select(boxes, points, conf[..., 1].float(), threshold=threshold, nms_threshold=NMS_THRESHOLD)

    def _priors(self, height: int, width: int) -> torch.Tensor:
        PriorBox = facexlib_module(self.name, "facexlib.detection.retinaface_utils").PriorBox

        return PriorBox(self.model.cfg, image_size=(height, width)).forward()
