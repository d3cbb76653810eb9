"""Restoration: exact pre/post-processing, batching, out-of-memory fallback, cancel, modes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import require_shared

from face_pipeline.alignment import align_faces
from face_pipeline.errors import RestoreOutOfMemory
from face_pipeline.restoration import restore_faces
from face_pipeline.restoration.batching import auto_batch_size, is_out_of_memory
from face_pipeline.restoration.modes import luma
from face_pipeline.types import DetectedFace
from gpen_arch import load_gpen_file


@pytest.fixture(scope="module")
def model():
    return load_gpen_file(require_shared("gpen", "vectors", "gpen_256_cm1_n0.25.pth"))


@pytest.fixture(scope="module")
def batch():
    from face_pipeline.image import load_image

    image = load_image(require_shared("faces", "astronaut.png"))
    points = ((203.7, 102.8), (245.0, 104.2), (224.4, 129.1), (202.7, 139.0), (244.8, 140.1))
    faces = [DetectedFace(box=(180, 70, 270, 170), score=1.0, landmarks=points, image_index=0),
             DetectedFace(box=(180, 70, 270, 170), score=1.0, image_index=1,
                          landmarks=tuple((x + 3, y + 2) for x, y in points)),
             DetectedFace(box=(180, 70, 270, 170), score=1.0, image_index=2,
                          landmarks=tuple((x - 2, y + 1) for x, y in points))]
    return align_faces(torch.cat([image, image * 0.9, image.flip(1)]), faces, size=256)


def test_equals_the_direct_forward(model, batch):
    restored = restore_faces(model, batch)
    with torch.no_grad():
        direct = (model(batch.crops * 2 - 1) * 0.5 + 0.5).clamp(0, 1)
    assert restored.restored.shape == (3, 3, 256, 256) and restored.restored.dtype == torch.float32
    assert torch.allclose(restored.restored, direct, atol=1e-6)


def test_batch_splitting_gives_the_same_result(model, batch):
    one = restore_faces(model, batch, batch_size=3).restored
    split = restore_faces(model, batch, batch_size=1).restored
    assert (one - split).abs().max().item() < 1e-4


def test_realigns_to_the_model_size(model, batch):
    from face_pipeline.alignment import realign

    restored = restore_faces(model, realign(batch, size=512))
    assert restored.size == 256 and restored.restored.shape[-1] == 256


class LimitedMemory(torch.nn.Module):
    """A model that runs out of memory above ``limit`` faces per forward."""

    def __init__(self, inner, limit, error):
        super().__init__()
        self.inner, self.limit, self.error, self.calls = inner, limit, error, []
        self.config = inner.config

    def forward(self, x):
        self.calls.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise self.error
        return self.inner(x)


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB")])
def test_out_of_memory_halves_the_batch(model, batch, error):
    limited = LimitedMemory(model, 1, error)
    restored = restore_faces(limited, batch, batch_size=3)
    assert limited.calls[:2] == [3, 1] and restored.restored.shape[0] == 3
    assert torch.allclose(restored.restored, restore_faces(model, batch).restored, atol=1e-4)


def test_one_face_that_does_not_fit_is_a_clear_error(model, batch):
    limited = LimitedMemory(model, 0, torch.cuda.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(RestoreOutOfMemory, match="not even one 256x256 face fits in memory"):
        restore_faces(limited, batch, batch_size=2)


def test_other_errors_are_not_swallowed(model, batch):
    limited = LimitedMemory(model, 0, RuntimeError("cuDNN error: bad param"))
    with pytest.raises(RuntimeError, match="cuDNN error"):
        restore_faces(limited, batch)
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_progress_and_interrupt(model, batch):
    seen = []
    restore_faces(model, batch, batch_size=1, on_progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]

    class Cancelled(Exception):
        pass

    calls = []

    def cancel_second():
        calls.append(1)
        if len(calls) == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        restore_faces(model, batch, batch_size=1, check_interrupt=cancel_second)


def test_strength(model, batch):
    assert torch.allclose(restore_faces(model, batch, strength=0.0).restored, batch.crops)
    full = restore_faces(model, batch).restored
    half = restore_faces(model, batch, strength=0.5).restored
    assert torch.allclose(half, (full + batch.crops) / 2, atol=1e-5)
    with pytest.raises(ValueError, match="strength must be between 0 and 1"):
        restore_faces(model, batch, strength=1.5)


def test_colorize_keeps_the_luminance(model, batch):
    gray = dataclasses.replace(batch, crops=luma(batch.crops).expand_as(batch.crops).contiguous())
    out = restore_faces(model, gray, mode="colorize").restored
    inside = ((out > 0.001) & (out < 0.999)).all(1, keepdim=True)  # where the clamp did not cut
    assert inside.float().mean() > 0.3
    assert (luma(out) - luma(gray.crops))[inside].abs().max().item() < 2e-3


def test_inpaint_needs_a_mask_and_runs_with_one(model, batch):
    with pytest.raises(ValueError, match="inpaint mode needs"):
        restore_faces(model, batch, mode="inpaint")
    masks = torch.zeros(3, 1, 512, 512)
    masks[:, :, 100:140, 200:260] = 1  # damage over the eyes, in image space
    out = restore_faces(model, batch, mode="inpaint", inpaint_masks=masks)
    assert out.restored.shape == (3, 3, 256, 256)
    with pytest.raises(ValueError, match="inpainting masks must be"):
        restore_faces(model, batch, mode="inpaint", inpaint_masks=torch.zeros(2, 1, 10, 10))


def test_unknown_mode(model, batch):
    with pytest.raises(ValueError, match="unknown restore mode 'sharpen'"):
        restore_faces(model, batch, mode="sharpen")


def test_auto_batch_size_follows_free_memory(model, monkeypatch):
    from face_pipeline.restoration import batching

    monkeypatch.setattr(batching, "free_memory_bytes", lambda device: 10 * 2**30)
    big = auto_batch_size(model, size=256, dtype=torch.float32, device=torch.device("cpu"), faces=100)
    monkeypatch.setattr(batching, "free_memory_bytes", lambda device: 1)
    assert auto_batch_size(model, size=256, dtype=torch.float32, device=torch.device("cpu"), faces=100) == 1
    assert big == batching.MAX_BATCH
    assert auto_batch_size(model, size=256, dtype=torch.float32, device=torch.device("cpu"), faces=2) <= 2
