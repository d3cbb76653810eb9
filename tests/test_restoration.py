"""Restoration: exact pre/post-processing against the reference weights; batching, out-of-memory fallback, cancel,
strength, device/dtype and the modes with cheap stand-in models (a forward of the real one costs ~0.5 s per face)."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from conftest import data_file

from face_pipeline.alignment import align_faces, realign
from face_pipeline.errors import RestoreError, RestoreOutOfMemory
from face_pipeline.restoration import (
    RestoreOptions,
    auto_batch_size,
    is_out_of_memory,
    masks_in_crop_space,
    restore_faces,
)
from face_pipeline.restoration.modes import luma
from face_pipeline.types import DetectedFace
from gpen_arch import load_gpen_file

POINTS = ((203.7, 102.8), (245.0, 104.2), (224.4, 129.1), (202.7, 139.0), (244.8, 140.1))  # astronaut.jpg


@pytest.fixture(scope="module")
def model():
    return load_gpen_file(data_file("gpen", "compact", "compact_256_cm1_n0.0625_s64.safetensors"))


@pytest.fixture(scope="module")
def batch():
    from face_pipeline.image import load_image

    image = load_image(data_file("faces", "astronaut.jpg"))
    faces = [DetectedFace(box=(180, 70, 270, 170), score=1.0, landmarks=POINTS, image_index=0),
             DetectedFace(box=(180, 70, 270, 170), score=1.0, image_index=1,
                          landmarks=tuple((x + 3, y + 2) for x, y in POINTS))]
    return align_faces(torch.cat([image, image.flip(1)]), faces, size=256)


@pytest.fixture(scope="module")
def restored(model, batch):
    return restore_faces(model, batch)


class Stand_in(torch.nn.Module):
    """A cheap GPEN look-alike: ``.config.size``, a parameter (device/dtype), a forward that changes the image and
    records its batch sizes; out of memory above ``limit`` faces per forward."""

    def __init__(self, size=256, limit=None, error=None):
        super().__init__()
        self.config = type("Config", (), {"size": size})()
        self.weight = torch.nn.Parameter(torch.tensor([0.9, -0.7, 0.5]).reshape(1, 3, 1, 1))
        self.limit, self.error, self.calls, self.inputs = limit, error, [], []

    def forward(self, x):
        self.calls.append(x.shape[0])
        self.inputs.append(x)
        if self.limit is not None and x.shape[0] > self.limit:
            raise self.error
        return (x * self.weight).flip(-1) * 1.3  # out of [-1, 1] in places: the clamp matters


def test_equals_the_direct_forward(model, batch, restored):
    with torch.no_grad():
        direct = (model((batch.crops - 0.5) / 0.5) * 0.5 + 0.5).clamp(0, 1)
    assert restored.restored.shape == (2, 3, 256, 256) and restored.restored.dtype == torch.float32
    assert torch.equal(restored.crops, batch.crops) and restored.size == 256
    assert (restored.restored - direct).abs().max().item() < 1e-6
    assert (restored.restored - batch.crops).abs().mean().item() > 0.05  # the random weights really changed it


def test_batch_splitting_gives_the_same_result(model, batch, restored):
    split = restore_faces(model, batch, options=RestoreOptions(batch_size=1)).restored
    assert (restored.restored - split).abs().max().item() < 1e-4


def test_realigns_to_the_model_size(batch):
    big = realign(batch, size=512)
    out = restore_faces(Stand_in(), big)
    assert out.size == 256 and out.restored.shape == (2, 3, 256, 256)
    assert (out.crops - batch.crops).abs().max().item() < 0.02  # re-cropped at 256 from the source images


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                                   RuntimeError("[enforce fail at alloc_cpu.cpp:116] DefaultCPUAllocator: can't "
                                                "allocate memory: you tried to allocate 9663676416 bytes"),
                                   MemoryError()])
def test_out_of_memory_halves_the_batch(batch, error, caplog):
    faces = dataclasses.replace(batch, crops=batch.crops.repeat(3, 1, 1, 1), faces=batch.faces * 3,
                                affines=batch.affines.repeat(3, 1, 1),
                                inverse_affines=batch.inverse_affines.repeat(3, 1, 1))
    limited = Stand_in(limit=2, error=error)
    with caplog.at_level(logging.WARNING):
        out = restore_faces(limited, faces, options=RestoreOptions(batch_size=6))
    assert limited.calls == [6, 3, 1, 1, 1, 1, 1, 1]  # 6 fails, 3 fails, then 1 at a time (the step stays halved)
    assert "out of memory" in caplog.text and "retrying with 3" in caplog.text
    again = restore_faces(Stand_in(), faces, options=RestoreOptions(batch_size=6)).restored
    assert torch.equal(out.restored, again)


def test_one_face_that_does_not_fit_is_a_clear_error(batch):
    limited = Stand_in(limit=0, error=torch.cuda.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(RestoreOutOfMemory, match=r"not even one 256x256 face fits in memory on cpu in float32 "
                                                 r"\(OutOfMemoryError: CUDA out of memory\)\. Try fp16/bf16"):
        restore_faces(limited, batch, options=RestoreOptions(batch_size=2))
    assert limited.calls == [2, 1]


def test_no_room_for_the_results_is_a_clear_error(batch, monkeypatch):
    def failing_empty(*args, **kwargs):  # torch.empty is patched only for this test (monkeypatch undoes it)
        raise RuntimeError("CUDA out of memory. Tried to allocate 576.00 MiB")

    monkeypatch.setattr(torch, "empty", failing_empty)
    with pytest.raises(RestoreOutOfMemory, match=r"no room for the 2 restored 256x256 faces \(0\.00 GiB float32\)"):
        restore_faces(Stand_in(), batch)


def test_other_errors_are_not_swallowed(batch):
    with pytest.raises(RuntimeError, match="cuDNN error"):
        restore_faces(Stand_in(limit=0, error=RuntimeError("cuDNN error: bad param")), batch)
    assert not is_out_of_memory(RuntimeError("shape mismatch")) and not is_out_of_memory(ValueError("out of memory"))
    bad = Stand_in()
    bad.forward = lambda x: x[:, :1]
    with pytest.raises(RestoreError, match=r"the model returned \[2, 1, 256, 256\], expected \[2, 3, 256, 256\]"):
        restore_faces(bad, batch, options=RestoreOptions(batch_size=2))
    nan = Stand_in()
    nan.forward = lambda x: x * float("nan")
    with pytest.raises(RestoreError, match=r"NaN/inf for 2 of 2 face\(s\) \(index 0, 1\) in float32; try fp32 or bf16"):
        restore_faces(nan, batch, options=RestoreOptions(batch_size=2))
    one_bad = Stand_in()  # the check runs once, after the last step: the faces are named whichever step they were in
    one_bad.forward = lambda x: torch.where(torch.arange(len(x)).view(-1, 1, 1, 1) == len(x) - 1, float("nan"), x)
    with pytest.raises(RestoreError, match=r"NaN/inf for 1 of 2 face\(s\) \(index 1\)"):
        restore_faces(one_bad, batch, options=RestoreOptions(batch_size=2))


def test_pre_and_post_processing(batch):
    stand_in = Stand_in()
    out = restore_faces(stand_in, batch, options=RestoreOptions(batch_size=2)).restored
    assert torch.equal(stand_in.inputs[0], (batch.crops - 0.5) / 0.5)  # RGB, [-1, 1]
    expected = ((stand_in.inputs[0] * stand_in.weight.detach()).flip(-1) * 1.3 * 0.5 + 0.5).clamp(0, 1)
    assert torch.allclose(out, expected, atol=1e-7) and out.min() == 0 and out.max() == 1


def test_progress_and_interrupt(batch):
    seen = []
    restore_faces(Stand_in(), batch, options=RestoreOptions(batch_size=1),
                  on_progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 2), (2, 2)]

    class Cancelled(Exception):
        pass

    calls, stand_in = [], Stand_in()

    def cancel_second():
        calls.append(1)
        if len(calls) == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        restore_faces(stand_in, batch, options=RestoreOptions(batch_size=1), check_interrupt=cancel_second)
    assert stand_in.calls == [1]  # stopped before the second batch


def test_strength(batch):
    stand_in = Stand_in()
    zero = restore_faces(stand_in, batch, options=RestoreOptions(strength=0.0)).restored
    assert torch.equal(zero, batch.crops) and stand_in.calls == []  # the model is not even run
    full = restore_faces(stand_in, batch).restored
    half = restore_faces(stand_in, batch, options=RestoreOptions(strength=0.5)).restored
    assert torch.allclose(half, (full + batch.crops) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="strength must be a number from 0 to 1, got 1.5"):  # checked once, by
        RestoreOptions(strength=1.5)  # the record, before any work
    with pytest.raises(ValueError, match="batch_size must be a whole number of at least 1, got 0"):
        RestoreOptions(batch_size=0)
    with pytest.raises(TypeError, match="options must be a RestoreOptions, got dict"):
        restore_faces(stand_in, batch, options={"strength": 0.5})


def test_the_forward_runs_in_the_models_precision_and_the_model_stays_put(batch):
    stand_in = Stand_in().to(torch.bfloat16)  # the caller (e.g. ComfyUI) decides where and how the model lives
    out = restore_faces(stand_in, batch).restored
    assert stand_in.inputs[0].dtype == torch.bfloat16 and out.dtype == torch.float32
    assert stand_in.weight.dtype == torch.bfloat16  # never moved or cast by the restore
    assert (out - restore_faces(Stand_in(), batch).restored).abs().max().item() < 0.02


def test_no_faces(batch):
    empty = dataclasses.replace(batch, faces=(), crops=batch.crops[:0], affines=batch.affines[:0],
                                inverse_affines=batch.inverse_affines[:0])
    out = restore_faces(Stand_in(), empty)
    assert out.restored.shape == (0, 3, 256, 256)


def test_colorize_feeds_gray_and_keeps_the_luminance(model, batch):
    stand_in = Stand_in()
    out = restore_faces(stand_in, batch, options=RestoreOptions(mode="colorize", batch_size=2)).restored
    fed = stand_in.inputs[0] * 0.5 + 0.5
    assert torch.allclose(fed, luma(batch.crops).expand_as(fed), atol=1e-6)  # 3-channel gray
    inside = ((out > 0.001) & (out < 0.999)).all(1, keepdim=True)  # where the final clamp did not cut
    assert inside.float().mean() > 0.3
    assert (luma(out) - luma(batch.crops))[inside].abs().max().item() < 1e-5
    assert (out[:, 0] - out[:, 2]).abs().mean() > 0.05  # and it has colour (the stand-in's)
    real = restore_faces(model, batch, options=RestoreOptions(mode="colorize", batch_size=2)).restored
    inside = ((real > 0.001) & (real < 0.999)).all(1, keepdim=True)
    assert (luma(real) - luma(batch.crops))[inside].abs().max().item() < 1e-5


def test_inpaint_paints_the_damage_white(batch):
    with pytest.raises(ValueError, match="inpaint mode needs inpaint_masks"):
        restore_faces(Stand_in(), batch, options=RestoreOptions(mode="inpaint"))
    as_is = Stand_in()  # an all-zero mask: the crops go in as they are (damage already painted white)
    restore_faces(as_is, batch, options=RestoreOptions(mode="inpaint", batch_size=2),
                  inpaint_masks=torch.zeros(1, 512, 512))
    assert torch.allclose(as_is.inputs[0], (batch.crops - 0.5) / 0.5, atol=1e-6)
    masks = torch.zeros(2, 512, 512)  # ComfyUI's MASK layout: [B, H, W], image space
    masks[:, 90:115, 190:260] = 1  # damage over the eyes
    stand_in = Stand_in()
    out = restore_faces(stand_in, batch, options=RestoreOptions(mode="inpaint", batch_size=2), inpaint_masks=masks)
    crop_masks = masks_in_crop_space(batch, masks)
    assert crop_masks.shape == (2, 1, 256, 256) and 0.02 < crop_masks.mean() < 0.2
    # the left eye (crop template point ~(101, 121) at 256) is damaged, the mouth (~(106, 183)) is not
    assert crop_masks[0, 0, 121, 101] == 1 and crop_masks[0, 0, 183, 106] == 0
    fed = stand_in.inputs[0] * 0.5 + 0.5
    damaged = crop_masks.expand_as(fed) == 1
    assert torch.equal(fed[damaged], torch.ones_like(fed[damaged]))
    assert torch.allclose(fed[crop_masks.expand_as(fed) == 0], batch.crops[crop_masks.expand_as(fed) == 0], atol=1e-6)
    assert out.restored.shape == (2, 3, 256, 256)
    one = restore_faces(Stand_in(), batch, options=RestoreOptions(mode="inpaint"),
                        inpaint_masks=masks[:1]).restored  # one mask for all
    assert torch.equal(one[0], out.restored[0])
    with pytest.raises(ValueError, match=r"inpainting masks must be image-space \[2, 512, 512\].*got \[2, 1, 10, 10\]"):
        restore_faces(Stand_in(), batch, options=RestoreOptions(mode="inpaint"),
                      inpaint_masks=torch.zeros(2, 1, 10, 10))


def test_unknown_mode_and_not_a_model(batch):
    with pytest.raises(ValueError, match="mode must be one of restore, colorize, inpaint; got 'sharpen'"):
        RestoreOptions(mode="sharpen")
    with pytest.raises(RestoreError, match="expected a GPEN model with .config.size, got Linear"):
        restore_faces(torch.nn.Linear(2, 2), batch)


def test_auto_batch_size_follows_the_memory_policy_and_the_step(model):
    from face_pipeline.memory import MemoryPolicy
    from face_pipeline.restoration import batching

    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # cuda: only consulted for the step and the fold rule
    per_face = batching.bytes_per_face(model, 256, torch.float32)
    assert per_face > model.estimate_memory(1, torch.float32)
    plenty = MemoryPolicy(free_bytes=lambda device: 1 << 50)
    assert auto_batch_size(model, size=256, dtype=torch.float32, device=cpu, faces=100, memory=plenty) == 1
    assert auto_batch_size(model, size=256, dtype=torch.float32, device=cuda, faces=100,
                           memory=plenty) == batching.GPU_FACES_PER_STEP
    assert auto_batch_size(model, size=256, dtype=torch.float32, device=cuda, faces=2, memory=plenty) == 2
    pending = batching.pending_weight_bytes(model, cuda)  # the folded weights its first CUDA forward derives
    assert pending > model.derived_weight_bytes("cpu") - model.fast_path.derived.nbytes()
    two = MemoryPolicy(free_bytes=lambda device: int((per_face * 2 + pending) / batching.USABLE_FRACTION) + 64)
    assert auto_batch_size(model, size=256, dtype=torch.float32, device=cuda, faces=100, memory=two) == 2
    none = MemoryPolicy(free_bytes=lambda device: 1)
    assert auto_batch_size(model, size=256, dtype=torch.float32, device=cuda, faces=100, memory=none) == 1


def test_free_memory_on_the_cpu_is_real():
    from face_pipeline.memory import free_memory_bytes

    free = free_memory_bytes(torch.device("cpu"))
    assert 64 << 20 < free < 1 << 44
