"""Detection post-processing for a whole batch on the network's device: decode, score filter, top-k, one NMS.

The torch backends (kornia YuNet, RetinaFace) run their network on ``[B, 3, h, w]`` and get, for every prior box of
every image, box and landmark offsets and a score. Here those are decoded for all images at once, filtered by the
score threshold, cut to each image's ``top_k`` best, and suppressed with one ``torchvision.ops.nms`` call over the
whole batch (every image's boxes moved to their own region of the plane, so boxes of different images never
overlap). The result stays on the device as one table; ``FaceDetector`` moves the tables of all its passes to the
host in one transfer and splits them by image there (``split_by_image``).

Host syncs per call, whatever the batch size and the number of faces: one for the score filter (its output size
depends on the values) and those inside ``nms`` (on CUDA: one). The per-image libraries' own post-processing
(kornia's ``FaceDetector.postprocess``, facexlib's ``batched_detect_faces``) loops over the images and, for kornia,
over the kept boxes, with a host sync in every step.

Tables are ``[M, 16]`` float32: image index within the batch, then a detection row (``multiscale.ROW_WIDTH``):
x1, y1, x2, y2, score, five (x, y) landmarks, in the pixels of the network's input.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DetectorError
from .multiscale import ROW_WIDTH, empty_rows

TABLE_WIDTH = 1 + ROW_WIDTH  # image index, then a row

_CONSTANTS: dict[tuple, torch.Tensor] = {}  # (what, backend, h, w, device, dtype) -> tensor on that device
_MAX_CACHED = 64


def cached(key: tuple, make, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``make()`` (a CPU tensor that depends only on ``key``) once per ``key`` + device + dtype, kept on ``device``.

    For the prior boxes (``[P, 4]``: centre x, centre y, width, height, normalised to the input; building them is a
    Python loop over every anchor, tens of ms at 1280x720) and the pixel scales: copying a CPU tensor to a GPU is a
    host sync, and a video has one input size."""
    full_key = (*key, str(device), dtype)
    value = _CONSTANTS.get(full_key)
    if value is None:
        if len(_CONSTANTS) >= _MAX_CACHED:  # many sizes (a folder of photos): forget the oldest
            _CONSTANTS.pop(next(iter(_CONSTANTS)))
        value = _CONSTANTS[full_key] = make().to(device=device, dtype=dtype)
    return value


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor, variances: tuple[float, float]) -> torch.Tensor:
    """SSD box decoding, batched: ``loc`` ``[B, P, 4]`` offsets (centre x, y, log width, log height) against
    ``priors`` ``[P, 4]`` -> ``[B, P, 4]`` x1, y1, x2, y2 in the priors' normalised units."""
    centre = priors[:, :2] + loc[..., :2] * variances[0] * priors[:, 2:]  # [B, P, 2]
    size = priors[:, 2:] * torch.exp(loc[..., 2:4] * variances[1])  # [B, P, 2]
    corner = centre - size / 2
    return torch.cat((corner, size + corner), dim=-1)  # [B, P, 4]


def decode_points(offsets: torch.Tensor, priors: torch.Tensor, variance: float) -> torch.Tensor:
    """Landmark decoding, batched: ``offsets`` ``[B, P, 2K]`` (x, y pairs) -> ``[B, P, 2K]`` in normalised units."""
    batch, count, width = offsets.shape
    pairs = offsets.reshape(batch, count, width // 2, 2)  # [B, P, K, 2]
    points = priors[:, None, :2] + pairs * variance * priors[:, None, 2:]
    return points.reshape(batch, count, width)


def select(boxes: torch.Tensor, points: torch.Tensor, scores: torch.Tensor, *, threshold: float,
           nms_threshold: float, top_k: int | None = None) -> torch.Tensor:
    """The detections of a batch, as one ``[M, 16]`` float32 table on the inputs' device.

    ``boxes`` ``[B, P, 4]`` x1, y1, x2, y2 and ``points`` ``[B, P, 10]`` in pixels, ``scores`` ``[B, P]``. Keeps,
    per image, the boxes scoring above ``threshold`` (strictly, as kornia and facexlib do), at most its ``top_k``
    best of them, then those that survive non-maximum suppression at IoU ``nms_threshold`` among the boxes of the
    same image (IoU on the corner coordinates, ``(x2 - x1) * (y2 - y1)`` areas). Rows are ordered by descending score
    over the whole batch, so each image's rows are too.
    """
    try:
        from torchvision.ops import nms
    except ImportError as exc:
        raise DetectorError("the torch detectors need torchvision for their non-maximum suppression, and it is not "
                            "installed: pip install torchvision (the build matching your torch), or use the "
                            "yunet_opencv detector") from exc

    _, count = scores.shape
    passing = scores > threshold
    if top_k is not None and count > top_k:
        # each image's top_k best among those above the threshold: the rest are pushed below every real score
        ranked, order = scores.masked_fill(~passing, float("-inf")).topk(top_k, dim=1)  # [B, top_k]
        image, slot = (ranked > threshold).nonzero(as_tuple=True)  # the one host sync of the filter
        prior = order[image, slot]
    else:
        image, prior = passing.nonzero(as_tuple=True)
    if image.numel() == 0:
        return scores.new_zeros((0, TABLE_WIDTH), dtype=torch.float32)
    kept_boxes = boxes[image, prior].float()  # [M, 4]
    kept_scores = scores[image, prior].float()  # [M]
    # One NMS for all images: image i's boxes are moved by i * span, span larger than any box's extent, so boxes of
    # two images never overlap. In float64, so that the move does not round the coordinates the IoU is taken on.
    plane = kept_boxes.double()
    span = plane.max() - plane.min() + 1.0  # a device scalar: no host sync
    moved = plane + (image.double() * span)[:, None]
    keep = nms(moved, kept_scores.double(), nms_threshold)  # descending score
    return torch.cat((image[keep, None].float(), kept_boxes[keep], kept_scores[keep, None],
                      points[image[keep], prior[keep]].float()), dim=1)  # [M, 16]


def split_by_image(table: np.ndarray, batch: int, *, keep_top_k: int | None = None) -> list[np.ndarray]:
    """Host side: a ``[M, 16]`` table (image index first, rows in descending score) -> ``batch`` float32 arrays
    ``[N, 15]``, the first ``keep_top_k`` rows of each image (all when None)."""
    table = np.asarray(table, np.float32).reshape(-1, TABLE_WIDTH)
    image = table[:, 0].astype(np.int64)
    order = np.argsort(image, kind="stable")  # each image's rows together, their score order kept
    table, image = table[order], image[order]
    starts = np.searchsorted(image, np.arange(batch + 1))
    out = []
    for index in range(batch):
        rows = table[starts[index]:starts[index + 1], 1:]
        if keep_top_k is not None:
            rows = rows[:keep_top_k]
        out.append(np.ascontiguousarray(rows) if len(rows) else empty_rows())
    return out
