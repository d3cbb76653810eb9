"""Temporal smoothing of landmarks along each track, so aligned crops do not jitter from frame to frame."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..types import DetectedFace


def smoothing_radius(strength: float) -> int:
    """How many frames on each side of a frame ``smooth_landmarks`` averages over at ``strength`` (6 at 1)."""
    return int(np.ceil(2 * (0.5 + 2.5 * strength)))


def smooth_landmarks(faces_per_image: list[list[DetectedFace]], *, strength: float = 0.5) -> list[list[DetectedFace]]:
    """Centred, exponentially weighted average of each tracked face's landmarks (and box) over neighbouring frames.

    ``strength`` 0 leaves the landmarks untouched; 1 averages over about +-4 frames. Faces without a ``track_id``
    are left as they are. Needs ``track_faces`` first.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"smoothing strength must be between 0 and 1, got {strength}")
    if strength == 0:
        return [list(faces) for faces in faces_per_image]
    sigma = 0.5 + 2.5 * strength  # frames
    radius = smoothing_radius(strength)
    by_track: dict[int, list[tuple[int, int]]] = {}
    for frame, faces in enumerate(faces_per_image):
        for slot, face in enumerate(faces):
            if face.track_id is not None:
                by_track.setdefault(face.track_id, []).append((frame, slot))
    result = [list(faces) for faces in faces_per_image]
    for members in by_track.values():
        frames = np.array([f for f, _ in members], dtype=np.float64)
        points = np.array([faces_per_image[f][s].landmarks_array() for f, s in members])  # [T, 5, 2]
        boxes = np.array([faces_per_image[f][s].box for f, s in members])  # [T, 4]
        for frame, slot in members:
            near = np.abs(frames - frame) <= radius
            weights = np.exp(-0.5 * ((frames[near] - frame) / sigma) ** 2)
            weights /= weights.sum()
            landmarks = np.tensordot(weights, points[near], axes=1)
            box = weights @ boxes[near]
            face = faces_per_image[frame][slot]
            result[frame][slot] = dataclasses.replace(
                face, landmarks=tuple((float(x), float(y)) for x, y in landmarks), box=tuple(float(v) for v in box))
    return result
