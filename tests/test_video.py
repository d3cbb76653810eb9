"""Tracking across frames and landmark smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from face_pipeline.types import DetectedFace
from face_pipeline.video import smooth_landmarks, track_faces

BASE = np.array([[40.0, 50.0], [60.0, 50.0], [50.0, 60.0], [42.0, 70.0], [58.0, 70.0]])


def face(dx: float, dy: float = 0.0, frame: int = 0, noise: np.ndarray | None = None) -> DetectedFace:
    points = BASE + (dx, dy) + (noise if noise is not None else 0)
    return DetectedFace(box=(30 + dx, 35 + dy, 70 + dx, 80 + dy), score=0.9,
                        landmarks=tuple(map(tuple, points)), image_index=frame)


def test_tracks_persist_across_moving_frames():
    frames = [[face(0, frame=0), face(200, frame=0)],
              [face(205, frame=1), face(4, frame=1)],  # order swapped, both moved a little
              [face(8, frame=2), face(210, frame=2)]]
    tracked = track_faces(frames)
    left = [f.track_id for frame in tracked for f in frame if f.box[0] < 100]
    right = [f.track_id for frame in tracked for f in frame if f.box[0] >= 100]
    assert len(set(left)) == 1 and len(set(right)) == 1 and left[0] != right[0]


def test_frames_without_faces_and_new_faces():
    tracked = track_faces([[face(0)], [], [face(2, frame=2)], [face(2, frame=3), face(300, frame=3)]])
    assert tracked[1] == []
    assert tracked[2][0].track_id == tracked[0][0].track_id  # a short gap keeps the track
    assert tracked[3][1].track_id not in (tracked[0][0].track_id,)


def test_smoothing_reduces_jitter():
    rng = np.random.default_rng(1)
    frames = [[face(i * 1.0, frame=i, noise=rng.normal(0, 2.0, (5, 2)))] for i in range(12)]
    tracked = track_faces(frames)
    smoothed = smooth_landmarks(tracked, strength=0.7)

    def jitter(seq):
        pts = np.array([f[0].landmarks_array() - (i, 0) for i, f in enumerate(seq)])  # remove the true motion
        return np.abs(np.diff(pts, axis=0)).mean()

    assert jitter(smoothed) < 0.5 * jitter(tracked)
    assert smooth_landmarks(tracked, strength=0.0) == [list(f) for f in tracked]
    with pytest.raises(ValueError, match="between 0 and 1"):
        smooth_landmarks(tracked, strength=2.0)
