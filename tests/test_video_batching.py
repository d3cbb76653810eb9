"""Frames through align -> (restore) -> paste as one batch give what each frame gives alone (the video path)."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch
from conftest import data_file

from face_pipeline.alignment import align_faces
from face_pipeline.paste import PasteOptions, paste_faces
from face_pipeline.types import DetectedFace


@pytest.fixture(scope="module")
def clip():
    """Three frames of Grace Hopper's photo, moved and dimmed a little, and her face in each (from the shared
    alignment landmarks, so no detector is needed)."""
    rgb = cv2.cvtColor(cv2.imread(str(data_file("faces", "grace_hopper.jpg"))), cv2.COLOR_BGR2RGB)
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    entry = json.loads(data_file("gpen", "alignment", "alignment.json").read_text())["grace_hopper.jpg"]
    points = np.asarray(entry["landmarks_xy"], dtype=np.float64)
    shifts = [(0, 0), (6, 0), (0, -4)]
    frames = torch.cat([0.9 ** i * image.roll((dy, dx), (-2, -1)) for i, (dx, dy) in enumerate(shifts)])
    faces = []
    for index, (dx, dy) in enumerate(shifts):
        pts = points + [dx, dy]
        box = (*(pts.min(0) - 40), *(pts.max(0) + 40))
        faces.append(DetectedFace(box=tuple(float(v) for v in box), score=0.99,
                                  landmarks=tuple((float(x), float(y)) for x, y in pts), image_index=index))
    return frames, faces


def _restored(batch):
    # a stand-in restorer that changes the face (so paste has something to blend), deterministic per crop
    return dataclasses.replace(batch, restored=(1 - batch.crops).clamp(0, 1))


@pytest.mark.parametrize("scale", [1, 2])
def test_batched_frames_equal_frame_by_frame(clip, scale):
    frames, faces = clip
    batch = _restored(align_faces(frames, faces, size=256))  # one face per frame: the batched warp
    together = paste_faces(batch, options=PasteOptions(scale=scale))
    for i, face in enumerate(faces):
        alone_batch = _restored(align_faces(frames[i:i + 1], [dataclasses.replace(face, image_index=0)], size=256))
        torch.testing.assert_close(batch.crops[i], alone_batch.crops[0], rtol=0, atol=1e-6)
        alone = paste_faces(alone_batch, options=PasteOptions(scale=scale))
        torch.testing.assert_close(together.images[i], alone.images[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(together.face_masks[i], alone.face_masks[0], rtol=0, atol=1e-6)
    assert (together.images - frames.repeat_interleave(scale, -1).repeat_interleave(scale, -2)).abs().max() > 0.1
