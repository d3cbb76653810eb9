"""Box geometry shared by detection (merging passes and angles) and video tracking.

Boxes are ``(x1, y1, x2, y2)`` in pixels; arrays of them are ``[N, 4]`` (wider rows are cut to their first four
columns, so detection rows ``[N, 15]`` can be passed as they are). Overlaps are computed in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EPSILON = 1e-9  # smallest denominator: a degenerate (zero-area) box overlaps nothing instead of dividing by zero
IOU_DUPLICATE = 0.4  # boxes overlapping more than this are the same face
INSIDE_DUPLICATE = 0.6  # a box this much inside a kept box is a fragment of that face


def _as_boxes(boxes: np.ndarray | Sequence) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64)
    if boxes.size == 0:
        return np.zeros((0, 4))
    return boxes.reshape(-1, boxes.shape[-1])[:, :4]


def _overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersections ``[N, M]`` and the areas ``[N]``, ``[M]`` of boxes ``a`` and ``b``."""
    a, b = _as_boxes(a), _as_boxes(b)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # [N, M, 2]
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    return inter, area_a, area_b


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` ``[N, 4]`` against every box in ``b`` ``[M, 4]`` -> ``[N, M]``
    float64 in 0..1."""
    inter, area_a, area_b = _overlaps(a, b)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, EPSILON)


def intersection_over_smaller(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection divided by the smaller of the two areas, ``[N, M]`` (1 when one box lies inside the other)."""
    inter, area_a, area_b = _overlaps(a, b)
    return inter / np.maximum(np.minimum(area_a[:, None], area_b[None, :]), EPSILON)


def keep_distinct(boxes: np.ndarray, groups: Sequence[int] | None = None) -> list[int]:
    """Non-maximum suppression of duplicate faces: the indices of the ``boxes`` ``[N, 4]`` (given in priority order,
    best first) that are kept, in that order.

    A box is dropped when it duplicates a box kept before it: IoU above ``IOU_DUPLICATE``, or lying mostly inside
    it (``intersection_over_smaller`` above ``INSIDE_DUPLICATE``). With ``groups`` (one label per box), only kept
    boxes of another group count (a detector's own non-maximum suppression already ran within a group)."""
    boxes = _as_boxes(boxes)
    kept: list[int] = []
    for i in range(len(boxes)):
        others = kept if groups is None else [k for k in kept if groups[k] != groups[i]]
        if others:
            box, against = boxes[i:i + 1], boxes[others]
            if (box_iou(box, against) > IOU_DUPLICATE).any() or \
                    (intersection_over_smaller(box, against) > INSIDE_DUPLICATE).any():
                continue
        kept.append(i)
    return kept
