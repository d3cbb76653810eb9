"""The detector interface: batched detection on ``[B, 3, H, W]`` RGB 0..1, coordinates in the input's pixels.

A backend implements ``_detect_table`` (the torch backends: one table for the batch, kept on the device,
``batched.py``) or ``_detect_batch`` (rows per image on the host) on a batch at one working resolution. This base
class validates the input, picks the working resolutions (``multiscale.py``: large images are detected on a
downscaled copy, very large faces on a further reduced one), moves the tables of every chunk and pass to the host in
one transfer, maps coordinates back, merges the passes and builds ``DetectedFace`` records.
"""

from __future__ import annotations

import logging
from abc import ABC

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidImageError
from ..image import check_unit_range
from ..types import DetectedFace
from .batched import split_by_image
from .multiscale import ROW_WIDTH, empty_rows, merge_passes, pass_sides

logger = logging.getLogger(__name__)

__all__ = ["FaceDetector", "MIN_SIDE"]

MIN_SIDE = 16  # images with a shorter side below this cannot hold a detectable face: no faces, no error
PIXELS_PER_FORWARD = 8_000_000  # batches are cut into chunks of about this many pixels per network run


class FaceDetector(ABC):  # noqa: B024 - an ABC for its role; subclasses override _detect_table
    """A face detector backend: ``detect(images)`` -> one list of ``DetectedFace`` per image.

    Subclasses set ``name``, ``default_score_threshold``, ``default_max_side`` (long side of the first working copy),
    ``reliable_face`` (the largest face, in working pixels, the network places correctly), ``sure_upright_score``
    (an image whose most confident face, found upright, scores at least this is taken as upright without
    ``rotations.looks_turned``'s check; the default checks every image), and ``module``: the
    torch network, which a host application may move between devices (ComfyUI's model management offloads it when
    other models need the memory); detection always runs where the network is at that moment.
    """

    name: str = "detector"
    default_score_threshold: float = 0.5
    default_max_side: int = 1280
    reliable_face: float = 450.0
    sure_upright_score: float = float("inf")
    module: torch.nn.Module | None = None  # None: no torch network (OpenCV's YuNet runs on the CPU)

    def __init__(
        self,
        *,
        score_threshold: float | None = None,
        device: str | torch.device = "cpu",
        max_side: int | None = None,
    ) -> None:
        if score_threshold is not None and not 0.0 <= float(score_threshold) <= 1.0:
            raise ValueError(f"score_threshold must be in 0..1, got {score_threshold}")
        if max_side is not None and int(max_side) < 64:
            raise ValueError(f"max_side must be at least 64 pixels, got {max_side}")
        self.score_threshold = self.default_score_threshold if score_threshold is None else float(score_threshold)
        self.device = torch.device(device)
        self.max_side = None if max_side is None else int(max_side)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, score_threshold={self.score_threshold}, "
                f"device={str(self.device)!r}, max_side={self.max_side})")

    # ------------------------------------------------------------------ public
    def detect(self, images: torch.Tensor, *, score_threshold: float | None = None) -> list[list[DetectedFace]]:
        """Find the faces in every image of a batch.

        ``images``: ``[B, 3, H, W]`` float RGB in 0..1 on any device. Returns ``B`` lists of ``DetectedFace``
        (``image_index`` set, box and landmarks in the input's pixels, sorted by descending score), with scores at
        or above ``score_threshold`` (default: the detector's). Images whose shorter side is below ``MIN_SIDE`` have
        no faces. Raises ``InvalidImageError`` (a ``ValueError``) for a wrong shape, dtype, NaN/inf or 0..255 values.
        """
        images = self.check_images(images)
        self._follow_module()
        threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"score_threshold must be in 0..1, got {threshold}")
        batch, _, height, width = images.shape
        if batch == 0:
            return []
        if min(height, width) < MIN_SIDE:
            logger.info("images of %dx%d are too small to hold a detectable face", width, height)
            return [[] for _ in range(batch)]
        per_image = self._detect_multiscale(images, threshold)
        return [[self._to_face(row, index) for row in rows] for index, rows in enumerate(per_image)]

    @staticmethod
    def check_images(images: torch.Tensor) -> torch.Tensor:
        """Validate a ``[B, 3, H, W]`` float 0..1 batch (values a little outside 0..1 are accepted and clamped
        later); returns it as float32."""
        if not isinstance(images, torch.Tensor):
            raise InvalidImageError(
                f"detect() expects a torch.Tensor [B, 3, H, W] RGB in 0..1, got {type(images).__name__}")
        shape = list(images.shape)
        if images.dim() != 4 or shape[1] != 3:
            hint = ""
            if images.dim() == 4 and shape[-1] in (1, 3, 4):
                hint = " (this looks like [B, H, W, C], ComfyUI's layout: use images.permute(0, 3, 1, 2))"
            elif images.dim() == 4 and shape[1] in (1, 4):
                hint = f" ({shape[1]} channels: convert grey or RGBA to RGB first, e.g. with image.to_rgb_float)"
            elif images.dim() == 3:
                hint = " (a single image: add the batch dimension with images[None])"
            raise InvalidImageError(f"detect() expects images [B, 3, H, W] RGB in 0..1, got shape {shape}{hint}")
        if not images.is_floating_point():
            raise InvalidImageError(
                f"detect() expects float images in 0..1, got {images.dtype}; convert with images.float() / 255")
        if images.numel() == 0:
            return images.float()
        check_unit_range(images)  # the pack's one "RGB in 0..1" check (one host sync)
        return images.float()  # slight overshoot is clamped on the working copies

    def working_copy(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (``[B, 3, H, W]`` float RGB 0..1, any device) downscaled once to the first working size
        (``first_side``), on the detector's device: ``[B, 3, h, w]`` float32, or ``images`` themselves when they are
        no larger. ``detect`` on the copy searches what it would search on ``images`` (its first pass is the copy, the
        others are made from it) and gives the faces in the copy's pixels. A caller that detects several times on
        one image (``rotations.detect_faces``: four angles) turns the small copy, never the full frame; the full
        frames are read once, a chunk of about ``PIXELS_PER_FORWARD`` input pixels at a time."""
        images = self.check_images(images)
        self._follow_module()
        batch, _, height, width = images.shape
        long_side = max(height, width)
        side = self.first_side(long_side)
        size = (max(1, round(height * side / long_side)), max(1, round(width * side / long_side)))
        if batch == 0 or side >= long_side or min(size) < MIN_SIDE:
            return images
        step = max(1, PIXELS_PER_FORWARD // (height * width))
        # [b, 3, H, W] -> [b, 3, *size], antialiased as detect's own passes are
        return torch.cat([F.interpolate(images[start:start + step].to(self.device), size=size, mode="bilinear",
                                        antialias=True, align_corners=False)
                          for start in range(0, batch, step)])

    def _follow_module(self) -> None:
        """Run where the network is now: a host may have moved it (loaded to the GPU, offloaded) since the last call."""
        param = next(self.module.parameters(), None) if self.module is not None else None
        if param is not None and param.device != self.device:
            logger.debug("%s: the network is now on %s (was %s)", self.name, param.device, self.device)
            self.device = param.device
            self._moved_to(param.device)

    # ------------------------------------------------------------ subclasses
    def _moved_to(self, device: torch.device) -> None:  # noqa: B027 - a hook, empty by default
        """Move what the backend keeps outside its network's parameters and buffers (nothing by default)."""

    #: at most this many rows per image and pass (after NMS, best first); None: all
    keep_top_k: int | None = None

    def _detect_table(self, images: torch.Tensor, threshold: float) -> torch.Tensor | None:
        """The torch backends' batched form: detect on ``images`` ``[b, 3, h, w]`` float32 RGB 0..1 (on
        ``self.device``) and return one ``[M, 16]`` float32 table on that device (``batched.py``: image index, then
        x1, y1, x2, y2, score, five (x, y) landmarks in the pixels of ``images``), rows in descending score, with no
        host sync that grows with the batch. None (the default): the backend has only ``_detect_batch``."""
        return None

    def _detect_batch(self, images: torch.Tensor, threshold: float) -> list[np.ndarray]:
        """Detect on ``images`` ``[b, 3, h, w]`` float32 RGB 0..1 (on ``self.device``), at their own resolution.

        Returns ``b`` float32 arrays ``[N, 15]``: x1, y1, x2, y2, score, then the five (x, y) landmarks in
        ``LANDMARK_NAMES`` order, in the pixels of ``images``. Backends without ``_detect_table`` override this;
        for the others it is ``_detect_table`` moved to the host and split by image."""
        table = self._detect_table(images, threshold)
        if table is None:
            raise NotImplementedError(f"{type(self).__name__} implements neither _detect_table nor _detect_batch")
        return split_by_image(table.cpu().numpy(), images.shape[0], keep_top_k=self.keep_top_k)

    def first_side(self, long_side: int) -> int:
        """Long side of the first working copy of an image whose long side is ``long_side`` (never upscaled)."""
        limit = self.default_max_side if self.max_side is None else self.max_side
        return min(long_side, limit)

    # ---------------------------------------------------------------- internals
    def _detect_multiscale(self, images: torch.Tensor, threshold: float) -> list[np.ndarray]:
        height, width = images.shape[-2:]
        long_side = max(height, width)
        sizes = []  # (h, w) of each pass's working copy, finest first
        for side in pass_sides(self.first_side(long_side), self.reliable_face):
            size = (max(1, round(height * side / long_side)), max(1, round(width * side / long_side)))
            if min(size) < MIN_SIDE:
                break
            sizes.append(size)
        if not sizes:
            return [empty_rows() for _ in range(images.shape[0])]
        batch = images.shape[0]
        found: list[list[np.ndarray]] = [[] for _ in sizes]  # [pass][image] -> rows in the pass's pixels
        tables: list[torch.Tensor] = []  # the torch backends': [M, 17] pass, image, row, all on the device
        start = 0
        for chunk in self._chunks(images, sizes[0]):
            work = chunk.to(self.device)
            for level, size in enumerate(sizes):
                if tuple(work.shape[-2:]) != size:
                    # [b, 3, h, w] -> [b, 3, *size], each pass from the previous one (cheap on huge frames);
                    # antialiased so that a downscale keeps the faces clean
                    work = F.interpolate(work, size=size, mode="bilinear", antialias=True, align_corners=False)
                clipped = work.clamp(0.0, 1.0)
                with torch.no_grad():
                    table = self._detect_table(clipped, threshold)
                    if table is None:  # a backend on the host (OpenCV): rows per image
                        found[level].extend(self._detect_batch(clipped, threshold))
                        continue
                table[:, 0] += start  # chunk -> batch image index
                tables.append(F.pad(table, (1, 0), value=float(level)))  # [M, 17]
            start += chunk.shape[0]
        if tables:  # one transfer to the host for every chunk and pass
            everything = torch.cat(tables).cpu().numpy()
            for level in range(len(sizes)):
                found[level] = split_by_image(everything[everything[:, 0] == level, 1:], batch,
                                              keep_top_k=self.keep_top_k)
        scales = [size[1] / width for size in sizes]
        return [merge_passes([self._unscale(level[i], size[1] / width, size[0] / height)
                              for level, size in zip(found, sizes)], scales, self.reliable_face)
                for i in range(batch)]

    @staticmethod
    def _chunks(images: torch.Tensor, size: tuple[int, int]):
        """Slices of the batch with about ``PIXELS_PER_FORWARD`` working pixels each."""
        step = max(1, PIXELS_PER_FORWARD // max(1, size[0] * size[1]))
        for start in range(0, images.shape[0], step):
            yield images[start:start + step]

    @staticmethod
    def _unscale(rows: np.ndarray, sx: float, sy: float) -> np.ndarray:
        """Map rows found on a copy scaled by (sx, sy) back to the original pixels (pixel centres kept)."""
        rows = np.asarray(rows, np.float32).reshape(-1, ROW_WIDTH).copy()
        if sx == 1.0 and sy == 1.0:
            return rows
        xs, ys = [0, 2, 5, 7, 9, 11, 13], [1, 3, 6, 8, 10, 12, 14]
        rows[:, xs] = (rows[:, xs] + 0.5) / sx - 0.5
        rows[:, ys] = (rows[:, ys] + 0.5) / sy - 0.5
        return rows

    @staticmethod
    def _to_face(row: np.ndarray, index: int) -> DetectedFace:
        points = row[5:15].reshape(5, 2)
        return DetectedFace(
            box=(float(row[0]), float(row[1]), float(row[2]), float(row[3])),
            score=float(row[4]),
            landmarks=tuple((float(x), float(y)) for x, y in points),
            image_index=index,
        )
