"""Tracking across frames and landmark smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from face_pipeline.types import DetectedFace
from face_pipeline.video import fill_gaps, frame_thumbnails, scene_cuts, smooth_landmarks, track_faces

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


def test_a_face_missed_for_a_frame_is_filled_in_between_its_neighbours():
    frames = [[face(0, frame=0)], [face(2, frame=1)], [], [face(6, frame=3)], [face(8, frame=4)]]
    tracked = track_faces(frames)
    filled, added = fill_gaps(tracked, max_gap=3)
    assert added == 1 and len(filled[2]) == 1
    gap = filled[2][0]
    assert gap.interpolated and gap.image_index == 2 and gap.track_id == tracked[1][0].track_id
    assert np.allclose(gap.landmarks_array(), BASE + (4, 0)) and np.allclose(gap.box, (34, 35, 74, 80))
    assert not any(f.interpolated for i, fr in enumerate(filled) if i != 2 for f in fr)
    assert fill_gaps(tracked, max_gap=0) == ([list(f) for f in tracked], 0)


def test_gaps_longer_than_the_limit_or_across_a_cut_stay_empty():
    long_gap = track_faces([[face(0, frame=0)], [], [], [face(3, frame=3)]])
    assert fill_gaps(long_gap, max_gap=1)[1] == 0 and fill_gaps(long_gap, max_gap=2)[1] == 2
    frames = [[face(0, frame=0)], [], [face(2, frame=2)]]
    assert fill_gaps(track_faces(frames), max_gap=3, cuts=(2,))[1] == 0
    with pytest.raises(ValueError, match="max_gap must be 0 or more"):
        fill_gaps(frames, max_gap=-1)


def test_no_track_continues_across_a_scene_cut_or_between_faces_that_overlap_little():
    tracked = track_faces([[face(0, frame=0)], [face(1, frame=1)], [face(2, frame=2)]], cuts=(2,))
    assert tracked[0][0].track_id == tracked[1][0].track_id != tracked[2][0].track_id
    # two different photos whose face boxes overlap with IoU ~0.38 (the case users hit) are not one track
    moved = track_faces([[face(0, frame=0)], [face(18, 0, frame=1)]])
    assert moved[0][0].track_id != moved[1][0].track_id


def test_scene_cuts_are_found_from_the_frames():
    import torch

    gen = torch.Generator().manual_seed(0)
    shot_a = torch.rand(1, 3, 64, 80, generator=gen)
    shot_b = torch.rand(1, 3, 64, 80, generator=gen).mul(0.5)
    pan = [torch.roll(shot_a, 2 * i, dims=-1) for i in range(3)]  # a slow pan: one shot
    frames = torch.cat(pan + [shot_b, torch.roll(shot_b, 1, dims=-1), shot_a])
    assert scene_cuts(frame_thumbnails(frames)) == (3, 5)
    assert scene_cuts(frame_thumbnails(frames[:1])) == ()
