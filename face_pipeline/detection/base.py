"""The detector interface: batched detection on ``[B, 3, H, W]`` 0..1 RGB with coordinates in input pixels.

Backends implement ``_detect_one`` on one image at a working resolution; this base class validates inputs, decides
the working resolutions (large images are detected on a downscaled copy, coordinates mapped back), merges passes,
and builds ``DetectedFace`` records.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidImageError
from ..types import DetectedFace

logger = logging.getLogger(__name__)

MIN_SIDE = 16  # smaller images cannot hold a detectable face: they return no faces


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` ``[N, 4]`` against every box in ``b`` ``[M, 4]`` (x1, y1, x2, y2)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def intersection_over_smaller(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    return inter / np.maximum(np.minimum(area_a[:, None], area_b[None, :]), 1e-9)


class FaceDetector(ABC):
    """A face detector backend. ``detect(images)`` -> one list of ``DetectedFace`` per image."""

    name: str = "detector"
    default_threshold: float = 0.5
    #: long sides of the working copies, largest first; an image smaller than a size is used as is
    working_sides: tuple[int, ...] = (1280,)

    def __init__(self, *, score_threshold: float | None = None, device: str | torch.device = "cpu") -> None:
        self.score_threshold = self.default_threshold if score_threshold is None else float(score_threshold)
        self.device = torch.device(device)

    @abstractmethod
    def _detect_one(self, image: torch.Tensor, threshold: float) -> np.ndarray:
        """Detect on one ``[3, h, w]`` 0..1 RGB image. Returns ``[N, 15]``: x1, y1, x2, y2, score, then five
        (x, y) landmarks, in that image's pixels."""

    def detect(self, images: torch.Tensor, *, score_threshold: float | None = None) -> list[list[DetectedFace]]:
        """``images``: ``[B, 3, H, W]`` float RGB in 0..1. Faces are sorted by descending score per image."""
        self._check(images)
        threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        results: list[list[DetectedFace]] = []
        height, width = images.shape[-2:]
        if min(height, width) < MIN_SIDE:
            logger.info("images of %dx%d are too small to hold a detectable face", width, height)
            return [[] for _ in range(images.shape[0])]
        with torch.no_grad():
            for index in range(images.shape[0]):
                rows = self._detect_multiscale(images[index], threshold)
                results.append([self._to_face(row, index) for row in rows])
        return results

    def _check(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise InvalidImageError(f"detect() expects images [B, 3, H, W] RGB in 0..1, got {shape}")
        if not images.is_floating_point():
            raise InvalidImageError(f"detect() expects float images in 0..1, got {images.dtype}")
        if not torch.isfinite(images).all():
            raise InvalidImageError("the images contain NaN or infinite values")

    def _detect_multiscale(self, image: torch.Tensor, threshold: float) -> np.ndarray:
        long_side = max(image.shape[-2:])
        passes = []
        for side in sorted({min(s, long_side) for s in self.working_sides}, reverse=True):
            scale = side / long_side
            work = image
            if scale < 1:
                size = (max(1, round(image.shape[-2] * scale)), max(1, round(image.shape[-1] * scale)))
                work = F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True,
                                     align_corners=False)[0].clamp(0, 1)
            rows = self._detect_one(work, threshold)
            if len(rows):
                rows = rows.copy()
                rows[:, [0, 1, 2, 3] + list(range(5, 15))] /= scale
            passes.append(rows)
        rows = np.concatenate([p for p in passes if len(p)] or [np.zeros((0, 15), np.float32)])
        return self._merge(rows)

    @staticmethod
    def _merge(rows: np.ndarray) -> np.ndarray:
        """Greedy suppression across passes: a box overlapping a kept one (IoU > 0.4, or mostly inside a larger kept
        box) is dropped; larger boxes are considered first among near-equal scores."""
        if len(rows) <= 1:
            return rows
        area = (rows[:, 2] - rows[:, 0]) * (rows[:, 3] - rows[:, 1])
        order = np.lexsort((-area, -np.round(rows[:, 4], 1)))
        kept: list[int] = []
        boxes = rows[:, :4]
        for i in order:
            if kept:
                k = np.asarray(kept)
                iou = box_iou(boxes[i:i + 1], boxes[k])[0]
                ios = intersection_over_smaller(boxes[i:i + 1], boxes[k])[0]
                if (iou > 0.4).any() or ((ios > 0.6) & (area[k] > area[i])).any():
                    continue
            kept.append(i)
        kept_rows = rows[kept]
        return kept_rows[np.argsort(-kept_rows[:, 4], kind="stable")]

    @staticmethod
    def _to_face(row: np.ndarray, index: int) -> DetectedFace:
        points = row[5:15].reshape(5, 2)
        return DetectedFace(
            box=tuple(float(v) for v in row[:4]),
            score=float(row[4]),
            landmarks=tuple((float(x), float(y)) for x, y in points),
            image_index=index,
        )
