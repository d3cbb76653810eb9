"""Filling short gaps in a face track: a face the detector missed for a few frames between two frames where it was
found is put back with its box and landmarks interpolated linearly, so it is restored there too instead of flickering
back to the original for a frame."""

from __future__ import annotations

import dataclasses
from itertools import pairwise

import numpy as np

from ..types import DetectedFace


def fill_gaps(faces_per_image: list[list[DetectedFace]], *, max_gap: int,
              cuts: tuple[int, ...] = ()) -> tuple[list[list[DetectedFace]], int]:
    """Add an interpolated face (``interpolated=True``, score the lower of its two neighbours') to every frame where
    a tracked face is missing between two sightings at most ``max_gap`` frames apart (``max_gap`` missing frames at
    most), never across a scene cut (``cuts``: frames that start a scene); its ``image_index`` is its frame's position
    in ``faces_per_image``. Needs ``track_faces`` first. Returns the
    faces per frame and how many were added."""
    if max_gap < 0:
        raise ValueError(f"max_gap must be 0 or more frames, got {max_gap}")
    result = [list(faces) for faces in faces_per_image]
    if max_gap == 0:
        return result, 0
    seen: dict[int, list[tuple[int, DetectedFace]]] = {}
    for frame, faces in enumerate(faces_per_image):
        for face in faces:
            if face.track_id is not None:
                seen.setdefault(face.track_id, []).append((frame, face))
    cut_list = sorted(cuts)
    added = 0
    for sightings in seen.values():
        for (f0, a), (f1, b) in pairwise(sightings):
            missing = f1 - f0 - 1
            if missing < 1 or missing > max_gap or any(f0 < cut <= f1 for cut in cut_list):
                continue
            for frame in range(f0 + 1, f1):
                t = (frame - f0) / (f1 - f0)
                points = (1 - t) * a.landmarks_array() + t * b.landmarks_array()
                box = (1 - t) * np.asarray(a.box) + t * np.asarray(b.box)
                result[frame].append(dataclasses.replace(
                    a, box=tuple(float(v) for v in box), landmarks=tuple((float(x), float(y)) for x, y in points),
                    score=min(a.score, b.score), image_index=frame, interpolated=True))
                added += 1
    return result, added

