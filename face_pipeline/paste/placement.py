"""Placing restored faces in the output image: where each face lands (its footprint) and its pixels and mask there.

``plan_placements`` works on the host from the faces' matrices (one transfer for the whole batch): per face, the
matrix from the sampled crop to the output pixels and the footprint, the output box its crop covers. A crop with more
than ``MAX_SHRINK`` crop pixels per output pixel is first shrunk (antialiased), so a 2048 face pasted small does not
alias. ``place_faces`` then samples every face at its footprint with ONE bicubic ``grid_sample`` per chunk of
faces (and one bilinear for parsing masks; analytic masks are evaluated at the output pixels directly), on the faces'
device, without a host sync per face. Chunks hold as many faces as ``max_bytes`` allows (at least one), of similar
footprint sizes (``chunks``).

Batching: the faces of a chunk share one crop side (faces shrunk to another side go to another chunk) and their
footprints are stacked on a common output size (each face's grid, built by ``affine_grid`` exactly as for that face
alone, lies in the top-left; the rest is never read). ``grid_sample`` treats every output pixel on its own, so a face
sampled in a chunk equals the face sampled alone, bit for bit: a face's pixels never depend on the other faces or
images of the batch. (Padding a shrunk crop into a larger one's canvas would let more faces share a call, but its
normalised coordinates would round differently in float32 and its pixels would then depend on its neighbours.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..alignment.warp import sampling_thetas
from ..types import FaceBatch
from .masks import mask_at
from .scale import face_zoom

PASTE_INTERPOLATIONS = ("bicubic", "bilinear")  # ``PasteOptions.paste_interpolation``
MAX_SHRINK = 2.0  # crop pixels per output pixel above which the crop is first shrunk (antialiased)
MIN_SHRUNK_SIDE = 16  # the smallest side a crop is shrunk to
CHUNK_BYTES = 256 * 2 ** 20  # default working memory of one chunk of faces (stacked crops, grids, samples)
MAX_PADDING = 1.5  # a chunk's padded footprints may cover at most this many times its faces' own pixels
OUTSIDE = -4.0  # grid value of the padding between footprints: far outside every crop (sampled as 0, never read)


@dataclass(frozen=True)
class Placement:
    """Where one face of a ``FaceBatch`` lands in the output image."""

    face: int  # index of the face in the batch
    image: int  # index of its image
    side: int  # side of the crop that is sampled: the restored side, or smaller when first shrunk
    matrix: np.ndarray  # [2, 3] float64, sampled-crop pixels -> output pixels
    box: tuple[int, int, int, int]  # footprint in output pixels: x0, y0, x1, y1 (exclusive)

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def output_pixels_per_crop_pixel(self) -> float:
        """Output pixels per sampled-crop pixel (the scale of ``matrix``)."""
        return float(np.hypot(*self.matrix[0, :2]))


def pixel_rescale(k: float) -> np.ndarray:
    """``[3, 3]``: ``x -> k x + (k - 1) / 2``, pixels of an image -> pixels of the same picture resampled k times
    larger (pixel-centre convention; pixel edges scale exactly by k)."""
    return np.array([[k, 0.0, (k - 1) / 2], [0.0, k, (k - 1) / 2], [0.0, 0.0, 1.0]])


def footprint(matrix: np.ndarray, side: int, out_h: int, out_w: int) -> tuple[int, int, int, int] | None:
    """The output box (x0, y0, x1, y1) a ``side`` x ``side`` crop covers under ``matrix`` (crop -> output pixels),
    grown by a pixel for the bicubic taps and clipped to the output; None when it falls outside."""
    corners = np.array([[-0.5, -0.5, 1], [side - 0.5, -0.5, 1], [-0.5, side - 0.5, 1], [side - 0.5, side - 0.5, 1]])
    pts = corners @ matrix.T
    x0, y0 = np.floor(pts.min(0)).astype(int) - 1
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, out_w), min(y1, out_h)
    return (int(x0), int(y0), int(x1), int(y1)) if x1 > x0 and y1 > y0 else None


def plan_placements(batch: FaceBatch, *, scale: int, size: int, prefilter: bool = True) -> list[Placement]:
    """Placements of the faces of ``batch`` restored at ``size`` pixels (each at its own side when the batch has
    ``face_sizes``), pasted at output ``scale``: image by image,
    each image's faces in batch order (the order the overlap rule sees them). Faces whose crop falls outside the
    output have none. Host only: the inverse matrices cross to the CPU once. ``prefilter``: crops with more than
    ``MAX_SHRINK`` crop pixels per output pixel are shrunk first (off: sampled as they are, as the official code's
    warpAffine does)."""
    height, width = batch.image_size
    out_h, out_w = height * scale, width * scale
    inverses = batch.inverse_affines.detach().cpu().double().numpy()  # [F, 2, 3] crop -> image, one transfer
    to_output = pixel_rescale(scale)  # input pixels -> output pixels
    zooms = face_zoom(batch)
    placements = []
    for b in range(batch.num_images):
        for i, face in enumerate(batch.faces):
            if face.image_index != b:
                continue
            # faces aligned at their own sides (routing) are restored at them; else every face at ``size``
            restored = batch.side(i) if batch.face_sizes is not None else size
            from_restored = pixel_rescale(batch.side(i) / restored)  # restored-crop pixels -> stored-crop pixels
            shrink = zooms[i] / scale  # restored-crop pixels per output pixel
            side = max(MIN_SHRUNK_SIDE, round(restored / shrink)) if prefilter and shrink > MAX_SHRINK else restored
            inverse = np.vstack([inverses[i], [0.0, 0.0, 1.0]])
            matrix = (to_output @ inverse @ from_restored @ pixel_rescale(restored / side))[:2]  # face px -> output
            box = footprint(matrix, side, out_h, out_w)
            if box is not None:
                placements.append(Placement(face=i, image=b, side=side, matrix=matrix, box=box))
    return placements


def chunk_bytes(count: int, side: int, height: int, width: int, with_masks: bool) -> int:
    """Working bytes of a chunk: stacked crops (and masks), grids, sampled faces and masks, mask temporaries."""
    channels = 4 if with_masks else 3
    return 4 * count * (channels * side * side + (2 + 3 + 1 + 4) * height * width)


def chunks(placements: Sequence[Placement], *, max_bytes: int, with_masks: bool) -> Iterator[list[Placement]]:
    """Consecutive runs of ``placements`` (at least one each) of one crop side, whose stacked working memory stays
    within ``max_bytes`` and whose padded footprints cover at most ``MAX_PADDING`` times the faces' own pixels (every
    face is sampled over the largest footprint of its run: faces of very different sizes go to different runs)."""
    run: list[Placement] = []
    side = height = width = pixels = 0
    for p in placements:
        grown = (max(side, p.side), max(height, p.height), max(width, p.width))
        count, own = len(run) + 1, pixels + p.height * p.width
        if run and (p.side != side or chunk_bytes(count, *grown, with_masks) > max_bytes
                    or count * grown[1] * grown[2] > MAX_PADDING * own):
            yield run
            run, grown, own = [], (p.side, p.height, p.width), p.height * p.width
        run.append(p)
        (side, height, width), pixels = grown, own
    if run:
        yield run


def _shrunk(values: torch.Tensor, side: int, mode: str) -> torch.Tensor:
    """``values`` ``[1, C, S, S]`` at ``side`` x ``side`` (antialiased), or as they are at their own size."""
    if values.shape[-1] == side:
        return values
    return F.interpolate(values, size=(side, side), mode=mode, align_corners=False, antialias=True)


@dataclass(frozen=True)
class PlacedFaces:
    """A chunk of faces sampled at their footprints; face ``k``'s values lie in the top-left
    ``[placements[k].height, placements[k].width]`` of each row."""

    placements: tuple[Placement, ...]
    faces: torch.Tensor  # [n, 3, h, w] float32 0..1 (h, w: the largest footprint of the chunk)
    masks: torch.Tensor  # [n, h, w] float32 0..1

    def face(self, k: int) -> torch.Tensor:
        """``[3, height, width]``: face ``k``'s pixels at its footprint."""
        p = self.placements[k]
        return self.faces[k, :, :p.height, :p.width]

    def mask(self, k: int) -> torch.Tensor:
        """``[height, width]``: face ``k``'s mask at its footprint."""
        p = self.placements[k]
        return self.masks[k, :p.height, :p.width]


def place_faces(faces: torch.Tensor, placements: Sequence[Placement], *, mask_type: str, feather: float,
                masks: torch.Tensor | None = None, max_bytes: int = CHUNK_BYTES,
                first: int = 0, interpolation: str = "bicubic", rounded: bool = False,
                exact_ones: bool = False) -> Iterator[PlacedFaces]:
    """Sample ``faces`` ``[F, 3, S, S]`` (float32 0..1, on the device to work on) at their ``placements``, chunk by
    chunk (see the module doc), in the placements' order. ``first``: the batch index of ``faces[0]`` (a step of a
    streamed paste holds faces ``first..first + F``; ``Placement.face`` counts in the whole batch).

    Masks: ``masks`` ``[F, 1, S, S]`` (crop space, e.g. parsing masks) are warped bilinearly with the faces; without
    them the analytic ``mask_type`` (``masks.ANALYTIC_MASKS``) is evaluated at each output pixel. Faces are sampled
    with ``interpolation`` (bicubic or bilinear) and zero padding; both are clamped to 0..1, and the faces rounded to
    8-bit levels with ``rounded`` (the official code warps uint8 faces; then sampled in float64 where the device has
    it, so that fewer pixels round the other way). ``exact_ones``: for ``masks`` that are 0 on
    their crop's outer pixels (the official masks), a mask is sampled as ``1 + sample(mask - 1)`` inside the crop and
    0 outside, so where every tap is 1 it is exactly 1 (``grid_sample``'s weights need not sum to exactly 1), as
    OpenCV's warp gives it: the per-pixel maximum over overlapping faces then breaks ties as the official code."""
    if interpolation not in PASTE_INTERPOLATIONS:
        raise ValueError(f"unknown paste interpolation {interpolation!r}; choose one of "
                         f"{', '.join(PASTE_INTERPOLATIONS)}")
    if not placements:
        return
    thetas = torch.as_tensor(np.stack([sampling_thetas(_local(p)[None], in_size=(p.side, p.side),
                                                       out_size=(p.height, p.width))[0] for p in placements]),
                             dtype=torch.float64 if rounded and faces.device.type != "mps" else torch.float32
                             ).to(faces.device)  # [F, 2, 3]: one transfer for every chunk (float64: see rounded)
    start = 0
    for run in chunks(placements, max_bytes=max_bytes, with_masks=masks is not None):
        placed = _place_chunk(faces, run, thetas[start:start + len(run)], mask_type=mask_type, feather=feather,
                              masks=masks, first=first, interpolation=interpolation, exact_ones=exact_ones)
        if rounded:
            placed.faces.mul_(255).round_().div_(255)
        yield placed
        start += len(run)


def _place_chunk(faces: torch.Tensor, run: list[Placement], thetas: torch.Tensor, *, mask_type: str,
                 feather: float, masks: torch.Tensor | None, first: int = 0,
                 interpolation: str = "bicubic", exact_ones: bool = False) -> PlacedFaces:
    """One chunk: ``thetas`` ``[n, 2, 3]`` (on the faces' device) are the sampling matrices of ``run``'s faces."""
    device = faces.device
    side = run[0].side  # one side per chunk (``chunks``)
    height, width = max(p.height for p in run), max(p.width for p in run)
    dtype = thetas.dtype  # float64 for rounded faces (place_faces)
    stack = faces.new_empty((len(run), 3, side, side), dtype=dtype)  # [n, 3, side, side]: the crops, shrunk if planned
    mask_stack = None if masks is None else faces.new_empty((len(run), 1, side, side), dtype=dtype)
    grid = torch.full((len(run), height, width, 2), OUTSIDE, device=device, dtype=dtype)  # [n, h, w, 2] in -1..1
    for k, p in enumerate(run):  # device work only: no host sync per face
        row = p.face - first
        stack[k] = _shrunk(faces[row:row + 1], side, "bicubic")[0]
        if masks is not None and mask_stack is not None:  # (both or neither)
            mask_stack[k] = _shrunk(masks[row:row + 1], side, "bilinear")[0]
        grid[k, :p.height, :p.width] = F.affine_grid(thetas[k:k + 1], [1, 1, p.height, p.width],
                                                     align_corners=False)[0]
    if mask_stack is None:  # the analytic mask at the output pixels, in crop units (0..1 across the crop)
        placed_masks = mask_at(mask_type, (grid[..., 0] + 1) / 2, (grid[..., 1] + 1) / 2, feather=feather)
        placed = F.grid_sample(stack, grid, mode=interpolation, padding_mode="zeros", align_corners=False)
    else:  # the given masks sampled like the faces
        placed = F.grid_sample(stack, grid, mode=interpolation, padding_mode="zeros", align_corners=False)
        if exact_ones:  # 1 + sample(mask - 1) where all taps are inside the crop, else 0 (see place_faces)
            inside = (grid.abs() <= 1 - 1 / side).all(-1)  # [n, h, w]: the sample point is >= half a pixel inside
            placed_masks = torch.where(inside, 1 + F.grid_sample(mask_stack - 1, grid, mode="bilinear",
                                                                 padding_mode="zeros", align_corners=False)[:, 0], 0)
        else:
            placed_masks = F.grid_sample(mask_stack, grid, mode="bilinear", padding_mode="zeros",
                                         align_corners=False)[:, 0]
    return PlacedFaces(placements=tuple(run), faces=placed.float().clamp_(0, 1),
                       masks=placed_masks.float().clamp_(0, 1))


def _local(p: Placement) -> np.ndarray:
    """``p.matrix`` with its footprint's corner as the origin: sampled-crop pixels -> footprint pixels."""
    local = p.matrix.copy()
    local[:, 2] -= p.box[:2]
    return local
