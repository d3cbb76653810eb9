"""Following faces through a sequence of frames (an image batch is a sequence of video frames)."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..boxes import box_iou
from ..types import DetectedFace

TRACK_IOU = 0.5  # the same face in neighbouring frames overlaps far more; unrelated faces can reach 0.4
#: a track is continued by a face at most this many frames after its last sighting (so at most this many minus one
#: frames may be missing in between); after this many frames without a face every track has ended
TRACK_MAX_GAP = 5


def track_faces(faces_per_image: list[list[DetectedFace]], *, iou_threshold: float = TRACK_IOU,
                max_gap: int = TRACK_MAX_GAP, cuts: tuple[int, ...] = ()) -> list[list[DetectedFace]]:
    """Give every face a ``track_id``: a face continues the track whose last box (seen at most ``max_gap`` frames
    ago) overlaps it most (IoU >= ``iou_threshold``), matched greedily by IoU; otherwise it starts a new track.
    No track continues across a scene cut (``cuts``: the frames that start a new scene, see ``scenes.py``).
    Frames without faces simply contribute nothing."""
    tracks: dict[int, tuple[int, np.ndarray]] = {}  # id -> (frame of last sighting, box)
    next_id = 0
    result: list[list[DetectedFace]] = []
    cut_set = set(cuts)
    for frame, faces in enumerate(faces_per_image):
        if frame in cut_set:
            tracks.clear()
        live = [(tid, box) for tid, (seen, box) in tracks.items() if frame - seen <= max_gap]
        assigned: dict[int, int] = {}
        if faces and live:
            iou = box_iou(np.array([f.box for f in faces]), np.array([box for _, box in live]))
            for flat in np.argsort(-iou, axis=None):
                i, j = np.unravel_index(flat, iou.shape)
                if iou[i, j] < iou_threshold:
                    break
                if i in assigned or live[j][0] in assigned.values():
                    continue
                assigned[i] = live[j][0]
        out = []
        for i, face in enumerate(faces):
            tid = assigned.get(i)
            if tid is None:
                tid, next_id = next_id, next_id + 1
            tracks[tid] = (frame, np.array(face.box))
            out.append(dataclasses.replace(face, track_id=tid))
        result.append(out)
    return result
