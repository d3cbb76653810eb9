"""Working resolutions for one image size, and the merge of detections found at several of them.

Every detector has a face size (in the pixels it actually sees) above which it stops being reliable: measured on the
shared photos, kornia's YuNet splits a face larger than about 350 px into two or three wrong boxes, RetinaFace and
OpenCV's YuNet start to do the same above about 550 px. Small faces, on the other hand, need resolution. So detection
runs on a small pyramid: the first pass at the backend's working size (where small faces are found), then passes at
half, a quarter, ... of it until a face filling the whole picture would be of a reliable size. Each pass vouches only
for a band of face sizes; the merge keeps the faces of the finest pass first and drops duplicates from the others.
The extra passes run on smaller copies and cost less than the first one (timings: the README's benchmark table).

Rows are ``[N, 15]`` float32 arrays: x1, y1, x2, y2, score, then five (x, y) landmarks.
"""

from __future__ import annotations

import numpy as np

from ..boxes import keep_distinct

__all__ = ["ROW_WIDTH", "empty_rows", "merge_passes", "pass_sides", "plausible"]

ROW_WIDTH = 15
MIN_WORKING_SIDE = 32  # no pass runs on a copy whose shorter side is below this
LANDMARK_MARGIN = 0.1  # landmarks further than this (fraction of the box) outside their box: not a face


def plausible(rows: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows whose five landmarks lie in their box (grown by ``LANDMARK_MARGIN`` on each side).

    Real faces have them well inside (at most ~0.93 of the box on the test photos); kornia's YuNet's false
    detections on black or smooth frames put the mouth below the box."""
    rows = np.asarray(rows, np.float32).reshape(-1, ROW_WIDTH)
    size = np.maximum(rows[:, 2:4] - rows[:, 0:2], 1e-6)  # [N, 2] box w, h
    relative = (rows[:, 5:15].reshape(-1, 5, 2) - rows[:, None, 0:2]) / size[:, None, :]  # [N, 5, 2]
    return np.asarray(((relative >= -LANDMARK_MARGIN) & (relative <= 1 + LANDMARK_MARGIN)).all(axis=(1, 2)))


def empty_rows() -> np.ndarray:
    return np.zeros((0, ROW_WIDTH), np.float32)


def pass_sides(first_side: int, reliable_face: float) -> list[int]:
    """Long sides of the working copies: ``first_side``, then halved while a face filling the picture would be
    larger than ``reliable_face`` (with 20 % slack). ``[1280, 640, 320]`` for 1280 and 300."""
    sides = [int(first_side)]
    while sides[-1] > 1.2 * reliable_face and sides[-1] // 2 >= MIN_WORKING_SIDE:
        sides.append(sides[-1] // 2)
    return sides


def merge_passes(passes: list[np.ndarray], scales: list[float], reliable_face: float) -> np.ndarray:
    """Merge the rows of several passes into one set of faces.

    ``passes[i]`` holds rows already mapped back to the original image's pixels, found on a copy scaled by
    ``scales[i]`` (finest first). Each pass vouches for a band of face sizes, measured on the longer box side in its
    own pixels: the first pass for faces up to ``reliable_face``, a later pass for faces between 0.4 and 1 times
    ``reliable_face`` (those its finer neighbour saw above 0.8 times it, so the bands overlap), the last pass also
    for anything larger. Rows outside their pass's band are dropped: a face too large for a pass is split or
    misplaced there and is found by a coarser one; a face too small for a later pass was seen better by a finer one.
    Rows whose landmarks lie outside their box are dropped (``plausible``). Rows are then kept finest pass first, by
    score; a row duplicating a kept face of another pass is dropped (``boxes.keep_distinct``; within one pass the
    backend's own non-maximum suppression already ran). The result is sorted by descending score.
    """
    last = len(passes) - 1
    candidates = []
    for level, (rows, scale) in enumerate(zip(passes, scales)):
        for row in rows[plausible(rows)]:
            size = max(row[2] - row[0], row[3] - row[1]) * scale
            too_large = size > reliable_face and level < last
            too_small = level > 0 and size <= 0.4 * reliable_face
            if not (too_large or too_small):
                candidates.append((level, -float(row[4]), row))
    if not candidates:
        return empty_rows()
    candidates.sort(key=lambda c: c[:2])
    rows = np.stack([row for _, _, row in candidates])
    rows = rows[keep_distinct(rows, groups=[level for level, _, _ in candidates])].astype(np.float32)
    return rows[np.argsort(-rows[:, 4], kind="stable")]
