"""Batched placement of restored faces: one grid_sample per chunk of faces, equal to placing each face alone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import load_photo, official_landmarks

from face_pipeline.alignment import align_faces
from face_pipeline.paste import PasteOptions, paste_faces
from face_pipeline.paste import placement as placement_module
from face_pipeline.paste.placement import Placement, chunks, place_faces, plan_placements
from face_pipeline.types import DetectedFace

RESTORED = 256  # the restored side: twice the crops', so small faces are shrunk before sampling at scale 1


@pytest.fixture(scope="module")
def batch():
    """Seven faces on three images (the Grace Hopper photo, a mirrored darker copy, a grey copy): moved, scaled by
    0.25 to 1.2 and rolled by -10 to 90 degrees, some overlapping; restored faces are random."""
    image = load_photo("grace_hopper.jpg")
    images = torch.cat([image, image.flip(-1) * 0.9, image.mean(1, keepdim=True).expand(-1, 3, -1, -1)])
    points = official_landmarks("grace_hopper.jpg")

    def face(index, scale, dx, dy, degrees):
        turn = np.radians(degrees)
        rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
        moved = (points - points.mean(0)) @ rotation.T * scale + points.mean(0) + (dx, dy)
        box = (*(moved.min(0) - 40 * scale), *(moved.max(0) + 40 * scale))
        return DetectedFace(box=tuple(float(v) for v in box), score=0.9, image_index=index,
                            landmarks=tuple((float(x), float(y)) for x, y in moved))

    faces = [face(0, 1.0, 0, 0, 0), face(0, 0.3, 150, 180, 20), face(0, 0.8, 40, 10, -10), face(1, 0.5, -100, 50, 45),
             face(1, 1.2, 30, -20, 5), face(2, 0.25, -150, -200, 0), face(2, 0.9, 0, 0, 90)]
    aligned = align_faces(images, faces, size=RESTORED // 2)
    restored = torch.rand(len(faces), 3, RESTORED, RESTORED, generator=torch.Generator().manual_seed(0))
    return dataclasses.replace(aligned, restored=restored, restore_mode="restore")


def crop_masks_of(restored: torch.Tensor) -> torch.Tensor:
    """Stand-in crop-space masks ``[F, 1, S, S]`` (as parsing gives): any values, warped like the faces."""
    return restored.mean(1, keepdim=True)


def test_plan_covers_every_face_and_shrinks_only_the_small_ones(batch):
    placements = plan_placements(batch, scale=1, size=RESTORED)
    assert [p.face for p in placements] == list(range(7))  # image by image, batch order within an image
    sides = [p.side for p in placements]
    assert sides[0] == sides[4] == RESTORED and min(sides) < RESTORED // 2  # large faces as they are, small shrunk
    assert all(0 <= p.box[0] < p.box[2] <= 512 and 0 <= p.box[1] < p.box[3] <= 600 for p in placements)
    assert all(p.side == RESTORED for p in plan_placements(batch, scale=4, size=RESTORED))  # nothing to shrink at 4x


@pytest.mark.parametrize("with_masks", [False, True])
@pytest.mark.parametrize("scale", [1, 2])
def test_batched_placement_equals_per_face_placement(batch, scale, with_masks, monkeypatch):
    """Bit for bit: a face's pixels never depend on the other faces (or images) of the batch."""
    monkeypatch.setattr(placement_module, "MAX_PADDING", float("inf"))  # chunks split by crop side only
    placements = plan_placements(batch, scale=scale, size=RESTORED)
    masks = crop_masks_of(batch.restored) if with_masks else None
    options = dict(mask_type="ellipse", feather=0.1, masks=masks)
    together = list(place_faces(batch.restored, placements, **options))
    alone = list(place_faces(batch.restored, placements, max_bytes=1, **options))  # one face per chunk
    assert len(alone) == len(placements) and len(together) < len(placements)
    assert all(len({p.side for p in run.placements}) == 1 for run in together)  # one crop side per chunk
    placed = [(run, k) for run in together for k in range(len(run.placements))]
    for (run, k), one, p in zip(placed, alone, placements):
        assert run.placements[k] == p
        face, mask = run.face(k), run.mask(k)
        assert face.shape == one.face(0).shape == (3, p.height, p.width) and mask.shape == (p.height, p.width)
        assert torch.equal(face, one.face(0)) and torch.equal(mask, one.mask(0))


def test_faces_shrunk_to_other_sides_never_share_a_chunk(batch):
    """At scale 1 the small faces are shrunk to sides of their own: each side gets its own grid_sample call, so no
    crop is padded into another's canvas (where its coordinates would round differently)."""
    placements = plan_placements(batch, scale=1, size=RESTORED)
    assert len({p.side for p in placements}) > 1
    runs = list(chunks(placements, max_bytes=2 ** 40, with_masks=True))
    assert [p for run in runs for p in run] == placements
    assert all(len({p.side for p in run}) == 1 for run in runs)


def test_one_grid_sample_per_chunk(batch, monkeypatch):
    calls = []
    original = F.grid_sample
    monkeypatch.setattr(F, "grid_sample", lambda *a, **k: calls.append(a[0].shape[0]) or original(*a, **k))
    monkeypatch.setattr(placement_module, "MAX_PADDING", float("inf"))
    placements = plan_placements(batch, scale=2, size=RESTORED)
    list(place_faces(batch.restored, placements, mask_type="rounded_rect", feather=0.1))
    assert calls == [7]  # all seven faces in one call
    calls.clear()
    list(place_faces(batch.restored, placements, mask_type="parsing", feather=0.1,
                     masks=crop_masks_of(batch.restored)))
    assert calls == [7, 7]  # faces (bicubic) and masks (bilinear)
    calls.clear()
    budget = placement_module.chunk_bytes(3, RESTORED, max(p.height for p in placements),
                                           max(p.width for p in placements), False)
    runs = list(chunks(placements, max_bytes=budget, with_masks=False))
    assert 3 <= len(runs) < 7 and all(1 <= len(run) <= 3 for run in runs)
    assert [p for run in runs for p in run] == placements  # in order, nothing lost
    list(place_faces(batch.restored, placements, mask_type="rounded_rect", feather=0.1, max_bytes=budget))
    assert calls == [len(run) for run in runs]
    calls.clear()
    paste_faces(batch, options=PasteOptions(scale=2, color_correction=False))  # samples through the same path
    assert calls == [7]


def test_chunks_keep_faces_of_similar_size_together(batch):
    """Every face of a chunk is sampled over the chunk's largest footprint: a chunk's padded area stays within
    MAX_PADDING times its faces' own pixels, so a large face does not make the small ones cost as much as itself."""
    placements = plan_placements(batch, scale=2, size=RESTORED)
    runs = list(chunks(placements, max_bytes=2 ** 40, with_masks=False))
    assert [p for run in runs for p in run] == placements
    for run in runs:
        padded = len(run) * max(p.height for p in run) * max(p.width for p in run)
        assert len(run) == 1 or padded <= placement_module.MAX_PADDING * sum(p.height * p.width for p in run)
    def sized(*sides):
        return [Placement(face=i, image=0, side=64, matrix=np.eye(3)[:2], box=(0, 0, s, s))
                for i, s in enumerate(sides)]

    assert [len(run) for run in chunks(sized(100, 100, 98, 101, 100), max_bytes=2 ** 40, with_masks=False)] == [5]
    assert [len(run) for run in chunks(sized(400, 100, 100, 100, 400), max_bytes=2 ** 40, with_masks=False)] \
        == [1, 3, 1]  # a small face next to a large one is not sampled over the large one's footprint
