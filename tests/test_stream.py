"""Restore and paste as a stream (Pipeline.restore_and_paste): at most a step of faces alive at once, pixels equal
bit for bit to restoring every face first and pasting them all at once, and the crops handed on as they come."""

from __future__ import annotations

import pytest
import torch
from helpers import count_alive_restores, grid_faces, load_photo, random_gpen

from face_pipeline.pipeline import Pipeline, PipelineOptions
from face_pipeline.types import DetectedFace
from gpen_arch.config import GPENConfig


@pytest.fixture(scope="module")
def model():
    return random_gpen(GPENConfig(size=64, channel_multiplier=1, narrow=0.0625))


@pytest.fixture(scope="module")
def images():
    photo = load_photo("grace_hopper.jpg")[..., :384, :384]  # [1, 3, 384, 384]
    gray = photo.mean(1, keepdim=True).expand(-1, 3, -1, -1)  # a black-and-white photo (keep_gray)
    return torch.cat([photo, gray.contiguous(), photo.flip(-1).contiguous()])


def all_at_once(pipeline: Pipeline, images, faces_per_image, **inputs):
    """The step nodes' way, as every face was restored and pasted before streaming: align all, restore all, paste
    all at once."""
    batch = pipeline.align(images, faces_per_image)
    restored = pipeline.restore(batch, inpaint_masks=None)
    return pipeline.paste(restored, images=images, **inputs), restored


@pytest.mark.parametrize("paste", [
    {"color_correction": True, "scale": 1},
    {"color_correction": True, "scale": "auto", "mask_type": "ellipse", "feather": 0.3},
    {"color_correction": False, "scale": 2, "keep_gray": False},
], ids=["scale1", "auto-ellipse", "scale2-plain"])
def test_streaming_equals_restoring_everything_first_bit_for_bit(model, images, paste):
    faces = [grid_faces(0, count=6, side=90, spacing=60), grid_faces(1, count=3, side=120, spacing=80),
             [], ]  # overlapping neighbours; one image without faces
    options = PipelineOptions.of(**paste)
    pipeline = Pipeline(model=model, options=options)
    protect = torch.zeros(1, 384, 384)
    protect[:, 100:140, 100:200] = 1
    expected, restored = all_at_once(pipeline, images, faces, protect=protect)
    streamed, kept = pipeline.restore_and_paste(images, faces, protect=protect)
    assert torch.equal(streamed.images, expected.images) and torch.equal(streamed.mask, expected.mask)
    assert torch.equal(streamed.face_masks, expected.face_masks) and streamed.scale == expected.scale
    assert torch.equal(kept.crops, restored.crops) and torch.equal(kept.restored, restored.restored)
    assert kept.faces == restored.faces and kept.restore_mode == "restore" and not kept.streamed
    light, nothing = pipeline.restore_and_paste(images, faces, protect=protect, keep_faces=False)
    assert nothing is None and light.face_masks.shape == (0, *expected.mask.shape[-2:])
    assert torch.equal(light.images, expected.images) and torch.equal(light.mask, expected.mask)


def test_at_most_a_step_of_faces_is_alive_and_crops_are_handed_on_once(model, images, monkeypatch):
    """16 faces on the CPU (one face per step): never more than one face's aligned and restored crops alive at
    once, whatever the number of faces; ``on_restored`` sees every face once, in order."""
    most = count_alive_restores(monkeypatch)
    faces = [grid_faces(0, count=16, side=80, spacing=70)]
    handed: list[DetectedFace] = []
    pipeline = Pipeline(model=model, options=PipelineOptions.of(scale="auto"))
    result, kept = pipeline.restore_and_paste(images[:1], faces, keep_faces=False,
                                              on_restored=lambda step: handed.extend(step.faces))
    assert kept is None and len(most) == 16 and max(most) == 1  # faces_per_step on the CPU: 1
    assert handed == faces[0]
    expected, _ = all_at_once(pipeline, images[:1], faces)
    assert torch.equal(result.images, expected.images)


def test_a_paste_that_runs_out_of_memory_restores_image_by_image_with_the_same_pixels(model, images, monkeypatch):
    from face_pipeline.paste import budget

    faces = [grid_faces(0, count=4, side=90, spacing=60), grid_faces(1, count=3, side=100, spacing=70), []]
    pipeline = Pipeline(model=model, options=PipelineOptions.of(scale=2))
    expected, _ = all_at_once(pipeline, images, faces)
    real, attempts, handed = budget.paste_faces, [], []

    def one_image_at_a_time(batch, **kwargs):
        attempts.append(batch.num_images)
        if batch.num_images > 1:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
        return real(batch, **kwargs)

    monkeypatch.setattr(budget, "paste_faces", one_image_at_a_time)
    result, kept = pipeline.restore_and_paste(images, faces, on_restored=lambda step: handed.extend(step.faces))
    assert attempts == [3, 1, 1, 1] and torch.equal(result.images, expected.images)
    assert kept.num_faces == 7 and handed == faces[0] + faces[1]  # the first step, restored again, not handed twice
