"""A frame sequence (``--video-frames``) as segments, and where a resumed run starts tracking again.

**Segments.** A frame that cannot be used (unreadable, corrupt, or skipped by the plan for another reason than an
existing output) ends a segment; so does a change of size: a resolution change is treated like a scene cut, the
frames of the new size start a new segment and are restored as usual. No face track continues from one segment to the
next, and frames restored together (a chunk) are always of one segment, so of one size.

**Resuming.** A frame's restored pixels depend only on its own faces after tracking, gap filling and smoothing
(``pipeline.stabilise_faces``), and on the chunk it is restored in (its batch). Given which track each face belongs
to, its faces depend on the detections of ``CONTEXT_FRAMES`` frames on either side:

- smoothing: the faces of its track within ``smoothing_radius`` frames on either side, at most
  ``MAX_SMOOTHING_RADIUS`` = 6 (strength 1: sigma 3 frames, radius ceil(2 * sigma));
- gap filling: a face put back in a gap comes from the two sightings around it, which a track allows at most
  ``TRACK_MAX_GAP`` = 5 frames apart; smoothing averages filled faces too, so the two add up to
  ``CONTEXT_FRAMES`` = 6 + 5 = 11;
- scene cuts: the cut before frame t is decided by frames t - 1 and t alone.

But track membership has no bounded memory: tracking matches greedily against the tracks alive, so a decision made
any number of frames before can change which track a later face joins, and 11 frames (or any fixed number) of
context do not give the same bytes in every case. What does is a point where no track is alive whatever came before:
the start of a segment, a scene cut, or a frame after ``TRACK_MAX_GAP`` frames without a selected face (every track
has ended). No track, gap or smoothing window crosses such a point, so the frames after it depend on nothing before
it. A resumed run (``track_start``) therefore detects and tracks again, without writing, from the latest such point
at or before the start of the chunk of the first frame it writes: in one long shot with faces throughout that is the
segment's start. A frame whose output exists is used as context and never written. Chunks are the frames at fixed
positions in the sequence (``chunk`` of them, cut at segment starts), so a resumed chunk holds the frames it held in
an uninterrupted run, and the frames written come out with the same bytes. Track ids are numbered from where tracking
starts, so a run that writes them (``--save-json``, ``--save-annotated``) tracks from the sequence's first frame.

**Temporal smoothing** (``VideoOptions.temporal_smoothing``, ``face_pipeline/video/temporal.py``): a frame's face is
also blended with the frame-by-frame restorations of its track in the ``temporal.WINDOW - 1`` frames before it, at
most one chunk back. A frame-by-frame restoration depends only on the frame's faces and its chunk, and the history
never crosses a point where no track is alive (track ids differ there). So a resumed run restores, without writing
it, the chunk before each chunk it writes when that one has nothing to write (``Worker.video``), and tracks from far
enough back that this context chunk is restored whole, as the uninterrupted run restored it (``track_start`` with
``context``): the history handed to the chunk it writes is the same, and so are its bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from face_pipeline.selection import FaceChoice
from face_pipeline.video import scene_cuts
from face_pipeline.video.smoothing import smoothing_radius
from face_pipeline.video.tracking import TRACK_MAX_GAP

#: the widest smoothing (strength 1) averages over this many frames on each side
MAX_SMOOTHING_RADIUS = smoothing_radius(1.0)
#: frames on either side of a frame whose detections decide its faces once its track is known: smoothing over faces
#: that gap filling put back (track membership itself needs more: ``track_start``)
CONTEXT_FRAMES = MAX_SMOOTHING_RADIUS + TRACK_MAX_GAP


@dataclass(frozen=True)
class SeenFrame:
    """What the detection pass keeps of one frame: its size (width, height), its scene-cut thumbnail and its faces;
    ``size`` None for a frame that cannot be used (``reason`` says why when it is to be reported)."""

    size: tuple[int, int] | None
    thumbnail: torch.Tensor | None = None  # [1, THUMB * THUMB] (scenes.frame_thumbnails)
    choices: tuple[FaceChoice, ...] = ()
    reason: str = ""

    @property
    def usable(self) -> bool:
        return self.size is not None

    @property
    def selected(self) -> int:
        return sum(choice.selected for choice in self.choices)


def starts_segment(before: SeenFrame, here: SeenFrame) -> bool:
    """Whether ``here`` starts a segment, ``before`` being the frame before it."""
    return not before.usable or not here.usable or before.size != here.size


def _cut_between(before: SeenFrame, here: SeenFrame) -> bool:
    """Whether a scene cut separates two frames (one without a thumbnail cannot be used: it ends a segment)."""
    if before.thumbnail is None or here.thumbnail is None:
        return True
    return scene_cuts(torch.cat([before.thumbnail, here.thumbnail])) == (1,)


def track_start(seen: Callable[[int], SeenFrame], first: int, *, chunk: int, context: bool = False) -> int:
    """The frame a run whose first frame to write is ``first`` detects and tracks from (see the module's text): the
    latest frame where no track is alive whatever came before, at or before the start of ``first``'s chunk (the
    ``chunk`` frames at fixed positions around it, or the segment start in it). ``context`` (temporal smoothing): at
    or before the start of the chunk before it too, unless a segment starts in between, so that chunk can be restored
    whole, as context. ``seen(i)``: frame ``i``'s ``SeenFrame`` (read on demand, kept)."""
    start = _no_track_alive(seen, first, chunk=chunk)
    before = first // chunk * chunk - chunk  # the chunk before first's starts there
    if context and start > max(before, 0) and not starts_segment(seen(start - 1), seen(start)):
        return _no_track_alive(seen, before + chunk - 1, chunk=chunk)
    return start


def _no_track_alive(seen: Callable[[int], SeenFrame], first: int, *, chunk: int) -> int:
    """``track_start`` without context."""
    chunk_start = first // chunk * chunk
    i = first
    while i > 0:
        before, here = seen(i - 1), seen(i)
        if starts_segment(before, here):
            return i
        if i <= chunk_start and (_cut_between(before, here)
                                 or all(seen(j).usable and seen(j).selected == 0
                                        for j in reversed(range(max(0, i - TRACK_MAX_GAP), i)))):
            return i
        i -= 1
    return 0


def segments(frames: range, seen: Callable[[int], SeenFrame]) -> list[list[int]]:
    """The usable frames of ``frames`` (consecutive indices), split where a segment starts."""
    result: list[list[int]] = []
    for i in frames:
        here = seen(i)
        if not here.usable:
            continue
        if not result or starts_segment(seen(i - 1), here):
            result.append([])
        result[-1].append(i)
    return result


def renumber_tracks(choices: list[list[FaceChoice]], first_id: int) -> tuple[list[list[FaceChoice]], int]:
    """``choices`` with every track id moved up by ``first_id`` (segments tracked one by one get distinct ids), and
    the id after the last one used."""
    ids = [c.face.track_id for per_frame in choices for c in per_frame if c.face.track_id is not None]
    if not ids:
        return choices, first_id
    moved = [[dataclasses.replace(c, face=dataclasses.replace(c.face, track_id=c.face.track_id + first_id))
              if c.face.track_id is not None else c for c in per_frame] for per_frame in choices]
    return moved, first_id + max(ids) + 1
