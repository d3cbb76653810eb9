"""Temporal smoothing of restored faces along their tracks (video mode), so a face does not flicker from frame to frame.

Each frame's face is restored on its own, so sensor noise, compression and what is left of the landmark jitter give
slightly different restored faces from one frame to the next. ``TemporalFilter`` blends each restored face with the
restored faces of the same track in the frames just before it, in the aligned face space (the crops of a track are
registered by its smoothed landmarks, and each earlier one is laid exactly over the current one by an affine map found
on the two input crops, ``_registration``), with a temporal *bilateral* weight: where the face itself changed (motion,
expression, lighting), past frames get no weight, so motion is not smeared and nothing ghosts; where it is still, the
noise averages out.

For the face of track k at frame t (``R``: the frame-by-frame restored crops, never earlier outputs, so there is no
recursion and a frame depends on a bounded past)::

    out_t(p) = sum_j a_j(p) R_{t-j}(p) / sum_j a_j(p),   j = 0 .. WINDOW - 1 (frames of track k present),
    a_0 = 1,   a_j(p) = s^j * g(d_j(p)),   g(d) = clip(2 - d / THRESHOLD, 0, 1)

``s`` is the strength (``VideoOptions.temporal_smoothing``); ``d_j`` is the mean absolute difference, in grey
levels 0..1, between the aligned INPUT crops at t and at t - j, both low-passed to ``CELLS`` x ``CELLS`` cells of the
crop (cell means of the colour statistics' copy, ``paste.color.stats_copy``), taken per cell and upsampled
bilinearly to the crop. ``g`` is 1 up to ``THRESHOLD`` and 0 from twice it: the threshold sits above what noise and
JPEG re-encoding change in a cell mean and below what a moving mouth, a turn of the head or a change of light does
(docs/pipeline.md, "Video: temporal smoothing", gives the measurements behind it).

Colour: the colour correction (``paste.color.match_color``) matches the restored face's statistics to a reference,
by default the frame's own aligned crop, whose noise would make the correction itself flicker. The reference handed
to the paste is instead the same weighted blend of the track's (registered) input crops at the statistics' size
(``RestoredStep.color_reference``).

A face without a track id (independent images) or the first frame of a track is returned exactly as restored, with
its own crop's statistics copy as reference (what the paste computes anyway): the bytes of the frame-by-frame
restoration. A track's history is at most ``WINDOW - 1`` restored crops (float16, on the crops' device: 25 MB each
at 2048) and their guides; a track not seen for ``WINDOW`` frames is forgotten, so memory is bounded by the faces
per frame times the window.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..paste.color import STATS_SIZE, stats_copy
from ..types import FaceBatch

#: frames a face is blended over: itself and the ``WINDOW - 1`` frames of its track before it (at most
#: ``face_jobs.job.FRAMES_PER_CHUNK`` + 1: a resumed run restores one chunk before its first as context)
WINDOW = 6
#: the input crops are compared on a grid of this many cells per side (cell means of the statistics' copy)
CELLS = 32
#: a cell whose input changed by more than this (mean absolute grey difference of its cell means, 0..1) starts to lose
#: its past; from twice this it keeps none
THRESHOLD = 0.015
#: past frames are laid over the current one by an affine map found on their guides (the landmarks' residual jitter),
#: each of its parts within this share of the side from the identity (2 %: a few pixels), in this many Gauss-Newton
#: steps
MAX_SHIFT = 0.02
REGISTRATION_STEPS = 3
_GREY = (0.299, 0.587, 0.114)
_IDENTITY = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])  # [1, 2, 3]: _warped's map that moves nothing


@dataclass(frozen=True)
class _Seen:
    """One earlier frame of a track: its frame-by-frame restored crop and its input's low-resolution copy."""

    frame: int
    restored: torch.Tensor  # [3, S, S] float16 0..1
    guide: torch.Tensor  # [3, g, g] float32 0..1, the input crop's statistics copy (g = min(STATS_SIZE, S))


@dataclass(frozen=True)
class TemporalSnapshot:
    """A ``TemporalFilter``'s state at one moment (``TemporalFilter.snapshot``)."""

    tracks: dict[int, tuple[_Seen, ...]]
    latest: int


class TemporalFilter:
    """The temporal smoothing of one frame sequence (see the module's text): create one per sequence (one per segment
    of a ``--video-frames`` run), then hand it the restored faces in frame order, step by step (``smooth``). It keeps
    each track's last ``window - 1`` frames; ``snapshot`` / ``rewind`` let a caller run the same faces again (a paste
    that falls back asks for them again) and get the same bytes. ``register``: lay each earlier frame over the
    current one first (``_registration``; off only to measure what it brings)."""

    def __init__(self, *, strength: float, window: int = WINDOW, threshold: float = THRESHOLD,
                 register: bool = True) -> None:
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"temporal smoothing strength must be above 0 and at most 1 (0 is no filter: do not "
                             f"create one), got {strength!r}")
        if window < 1 or not threshold > 0:
            raise ValueError(f"window must be at least 1 frame and threshold above 0, got {window}, {threshold}")
        self.strength, self.window, self.threshold = float(strength), int(window), float(threshold)
        self.register = register
        self._tracks: dict[int, tuple[_Seen, ...]] = {}  # track id -> its last frames, oldest first
        self._latest = -1  # the latest frame handed over

    def snapshot(self) -> TemporalSnapshot:
        """The state now, for ``rewind`` (cheap: the tensors are shared, and never changed in place)."""
        return TemporalSnapshot(tracks=dict(self._tracks), latest=self._latest)

    def rewind(self, snapshot: TemporalSnapshot) -> None:
        """Back to the state of ``snapshot``: the faces handed over since then are forgotten."""
        self._tracks, self._latest = dict(snapshot.tracks), snapshot.latest

    @property
    def tracks(self) -> int:
        """Tracks with a history kept."""
        return len(self._tracks)

    def smooth(self, crops: torch.Tensor, restored: torch.Tensor, *, tracks: Sequence[int | None],
               frames: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``crops``: the aligned input crops ``[n, 3, S, S]`` float32 0..1; ``restored``: their frame-by-frame
        restorations, the same shape and device; ``tracks``: each face's track id (None: not tracked, left as it
        is); ``frames``: each face's frame number in the sequence, never decreasing from face to face and call to
        call.

        Returns the smoothed faces ``[n, 3, S, S]`` float32 0..1 and the colour correction's references ``[n, 3, g,
        g]`` float32 0..1 (g = min(STATS_SIZE, S)), on the crops' device, and remembers each tracked face for the
        frames after it."""
        if crops.dim() != 4 or crops.shape[1] != 3 or crops.shape[-1] != crops.shape[-2] \
                or restored.shape != crops.shape:
            raise ValueError(f"crops and restored must be the same [n, 3, S, S], got {list(crops.shape)} and "
                             f"{list(restored.shape)}")
        if not len(tracks) == len(frames) == crops.shape[0]:
            raise ValueError(f"one track id and one frame number per face: {crops.shape[0]} faces, {len(tracks)} "
                             f"track ids, {len(frames)} frames")
        guides = stats_copy(crops, min(STATS_SIZE, crops.shape[-1]))  # [n, 3, g, g]: what the paste would compute
        smoothed, references = [], []
        for k, (track, frame) in enumerate(zip(tracks, frames)):
            frame = int(frame)
            if frame < self._latest:
                raise ValueError(f"faces must come in frame order: frame {frame} after frame {self._latest}")
            self._forget(frame)
            face = restored[k].float()
            if track is None:
                smoothed.append(face)
                references.append(guides[k])
                continue
            here = _Seen(frame, restored[k].to(torch.float16), guides[k])
            past = [seen for seen in self._tracks.get(track, ()) if 0 < frame - seen.frame < self.window]
            face, reference = self._blend(face, here, past)
            smoothed.append(face)
            references.append(reference)
            self._tracks[track] = (*past, here)[1 - self.window:] if self.window > 1 else ()
        return torch.stack(smoothed), torch.stack(references)

    def _forget(self, frame: int) -> None:
        """Drops the tracks whose last frame is too old to count for ``frame`` or any later frame."""
        self._latest = frame
        for track in [track for track, seen in self._tracks.items()
                      if not seen or frame - seen[-1].frame >= self.window]:
            del self._tracks[track]

    def _blend(self, restored: torch.Tensor, here: _Seen, past: list[_Seen]) -> tuple[torch.Tensor, torch.Tensor]:
        """One face: ``restored`` ``[3, S, S]`` blended with its ``past`` frames (oldest first), and its colour
        reference ``[3, g, g]``. Without a past, or where every cell changed, the face as restored, bit for bit."""
        if not past:
            return restored, here.guide
        cells = _cells(here.guide[None])  # [1, 1, c, c]
        size, small = restored.shape[-1], here.guide.shape[-1]
        weights, thetas, guides = [], [], []  # per past frame: [1, c, c], [1, 2, 3] or None, [1, 3, g, g]
        for seen in past:
            guide = seen.guide[None]
            theta = _registration(_grey(guide), _grey(here.guide[None])) if self.register else None
            if theta is None and seen.restored.shape[-1] != size:  # restored by a model of another size: resampled
                theta = _IDENTITY.to(guide.device)
            guide = guide if theta is None else _warped(guide, theta, side=small)
            change = (cells - _cells(guide)).abs()[0]  # [1, c, c]
            keep = (2.0 - change / self.threshold).clamp_(0.0, 1.0)  # g(d)
            weights.append(keep * self.strength ** (here.frame - seen.frame))
            thetas.append(theta)
            guides.append(guide)
        stacked = torch.stack(weights)  # [m, 1, c, c]
        if not bool(stacked.any()):  # every cell changed since every earlier frame
            return restored, here.guide
        full = F.interpolate(stacked, size=(size, size), mode="bilinear", align_corners=False)  # [m, 1, S, S]
        low = F.interpolate(stacked, size=(small, small), mode="bilinear", align_corners=False)  # [m, 1, g, g]
        face, total = restored.clone(), torch.ones_like(full[0])
        reference, total_low = here.guide.clone(), torch.ones_like(low[0])
        for seen, theta, guide, weight, weight_low in zip(past, thetas, guides, full, low):
            earlier = seen.restored.float()[None]  # [1, 3, S, S]
            earlier = earlier if theta is None else _warped(earlier, theta, side=size, mode="bicubic")
            face.add_(weight * earlier[0])
            total.add_(weight)
            reference.add_(weight_low * guide[0])
            total_low.add_(weight_low)
        return face.div_(total).clamp_(0, 1), reference.div_(total_low)


def _grey(images: torch.Tensor) -> torch.Tensor:
    """``[n, 3, g, g]`` RGB -> ``[n, 1, g, g]`` grey (BT.601 luma)."""
    return (images * images.new_tensor(_GREY).view(1, 3, 1, 1)).sum(1, keepdim=True)


def _cells(guides: torch.Tensor) -> torch.Tensor:
    """``[n, 3, g, g]`` -> ``[n, 1, c, c]`` grey cell means (c = min(CELLS, g))."""
    return F.adaptive_avg_pool2d(_grey(guides), min(CELLS, guides.shape[-1]))


def _warped(images: torch.Tensor, theta: torch.Tensor, *, side: int | None = None,
            mode: str = "bilinear") -> torch.Tensor:
    """``images`` ``[1, C, s, s]`` sampled through ``theta`` ``[1, 2, 3]`` (``affine_grid``'s units: the side is 2)
    onto ``[1, C, side, side]`` (default: s), edges repeated. Crops of one face at two sizes (models of two sizes)
    share these units, so an earlier frame's crop is resampled to the current one's size by the same map."""
    side = images.shape[-1] if side is None else side
    grid = F.affine_grid(theta.to(images.dtype), [1, images.shape[1], side, side], align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode="border", align_corners=False)


def _registration(moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """The affine map that best lays ``moving`` over ``fixed`` (grey ``[1, 1, g, g]`` of two frames' input crops):
    ``REGISTRATION_STEPS`` Gauss-Newton (Lucas-Kanade) steps over the central half of the crop (the face), each part
    of the map kept within ``MAX_SHIFT`` of the side from the identity. The crops are registered by the smoothed
    landmarks already; this takes out what is left of their jitter (a fraction of a pixel, but enough to make the
    blend wobble when the face is pasted back with the current frame's landmarks). As ``_warped``'s ``theta``
    ``[1, 2, 3]``. Float32 throughout and without a host sync, on any device."""
    side = fixed.shape[-1]
    lo, hi = side // 4, side - side // 4
    target = fixed[0, 0, lo:hi, lo:hi]
    coords = (torch.arange(lo, hi, dtype=torch.float32, device=fixed.device) + 0.5) * 2 / side - 1  # grid units
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=fixed.device)
    ridge = torch.eye(6, device=fixed.device) * 1e-6  # a flat crop stays where it is
    theta = identity.clone()
    for _ in range(REGISTRATION_STEPS):
        warped = _warped(moving, theta[None], side=side)[0, 0, lo - 1:hi + 1, lo - 1:hi + 1]  # [h + 2, h + 2]
        gx = (warped[1:-1, 2:] - warped[1:-1, :-2]) * (side / 4)  # per grid unit
        gy = (warped[2:, 1:-1] - warped[:-2, 1:-1]) * (side / 4)
        error = (target - warped[1:-1, 1:-1]).flatten()  # [h * h]
        jacobian = torch.stack([gx * x, gx * y, gx, gy * x, gy * y, gy]).flatten(1)  # [6, h * h]
        step = torch.linalg.solve(jacobian @ jacobian.T + ridge, jacobian @ error)  # [6]
        theta = identity + (theta + step.view(2, 3) - identity).clamp(-2 * MAX_SHIFT, 2 * MAX_SHIFT)
    return theta[None]


def smooth_batch(batch: FaceBatch, temporal: TemporalFilter) -> FaceBatch:
    """A restored ``FaceBatch`` of video frames (``image_index``: the frame number) with its restored faces smoothed
    by ``temporal`` along their tracks, face by face in frame order, and their colour references set
    (``color_reference``; faces of several sizes, ``face_sizes``, each in its top-left square as its crops)."""
    if batch.num_faces == 0:
        return batch
    restored = batch.restored_faces()
    smoothed = restored.clone()
    small = min(STATS_SIZE, batch.size)
    references = batch.crops.new_zeros((batch.num_faces, 3, small, small), dtype=torch.float32)
    for i in sorted(range(batch.num_faces), key=lambda i: batch.faces[i].image_index):  # stable: frame order
        side = batch.side(i)
        face, reference = temporal.smooth(batch.crops[i:i + 1, :, :side, :side],
                                          restored[i:i + 1, :, :side, :side].to(batch.crops.device),
                                          tracks=[batch.faces[i].track_id], frames=[batch.faces[i].image_index])
        smoothed[i, :, :side, :side] = face[0].to(smoothed.device)
        references[i, :, :reference.shape[-1], :reference.shape[-1]] = reference[0]
    return dataclasses.replace(batch, restored=smoothed, color_reference=references)
