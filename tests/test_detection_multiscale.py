"""The resolution pyramid and the merge of its passes, on hand-made detections."""

from __future__ import annotations

import numpy as np

from face_pipeline.boxes import box_iou, intersection_over_smaller
from face_pipeline.detection.multiscale import merge_passes, pass_sides, plausible


def row(x1, y1, x2, y2, score=0.99):
    """A detection row with landmarks placed like a frontal face's inside its box."""
    w, h = x2 - x1, y2 - y1
    rel = [(0.3, 0.4), (0.7, 0.4), (0.5, 0.6), (0.35, 0.75), (0.65, 0.75)]
    points = [v for px, py in rel for v in (x1 + px * w, y1 + py * h)]
    return np.array([x1, y1, x2, y2, score, *points], np.float32)


def test_pass_sides():
    assert pass_sides(1280, 300) == [1280, 640, 320]
    assert pass_sides(1000, 450) == [1000, 500]
    assert pass_sides(512, 450) == [512]
    assert pass_sides(100, 300) == [100]


def test_box_overlaps():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [2, 2, 4, 4], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(box_iou(a, b)[0], [1, 1 / 3, 0.04, 0], atol=1e-6)
    np.testing.assert_allclose(intersection_over_smaller(a, b)[0], [1, 0.5, 1, 0], atol=1e-6)


def test_plausible_rejects_landmarks_outside_the_box():
    good = row(0, 0, 100, 100)
    bad = good.copy()
    bad[14] = 130  # right mouth corner 30 % below the box
    assert plausible(np.stack([good, bad])).tolist() == [True, False]


def test_split_large_face_is_replaced_by_the_coarse_pass():
    # reliable up to 300 px (kornia's YuNet): pass 0 (scale 1) splits a 600 px face into two fragments of
    # 350-400 px; pass 1 (scale 0.5) sees it whole at 300 px
    fragments = np.stack([row(100, 100, 500, 450, 1.0), row(300, 300, 700, 700, 0.98)])
    small = row(900, 100, 940, 150, 0.95)  # a small face only the fine pass can vouch for
    whole = row(100, 100, 700, 700, 0.97)
    small_seen_coarse = row(901, 101, 939, 149, 0.9)
    merged = merge_passes([np.concatenate([fragments, small[None]]), np.stack([whole, small_seen_coarse])],
                          [1.0, 0.5], 300)
    assert len(merged) == 2
    np.testing.assert_array_equal(merged[0], whole)  # sorted by score: 0.97 before 0.95
    np.testing.assert_array_equal(merged[1], small)  # the fine pass's copy of the small face, not the coarse one


def test_duplicates_prefer_the_finer_pass_and_last_pass_keeps_large_faces():
    fine = row(100, 100, 400, 400, 0.9)
    coarse = row(102, 98, 398, 405, 0.99)
    merged = merge_passes([fine[None], coarse[None]], [1.0, 0.5], 450)
    np.testing.assert_array_equal(merged, fine[None])
    huge = row(0, 0, 1000, 1000, 0.95)  # 500 px at the coarsest pass: too large, but nothing coarser exists
    assert len(merge_passes([np.zeros((0, 15), np.float32), huge[None]], [1.0, 0.5], 450)) == 1
    assert len(merge_passes([huge[None], np.zeros((0, 15), np.float32)], [1.0, 0.5], 450)) == 0


def test_overlapping_faces_of_one_pass_are_all_kept():
    a, b = row(0, 0, 100, 100), row(60, 0, 160, 100)  # two real neighbours, the backend's NMS kept both
    assert len(merge_passes([np.stack([a, b])], [1.0], 450)) == 2
    assert merge_passes([np.zeros((0, 15), np.float32)], [1.0], 450).shape == (0, 15)
