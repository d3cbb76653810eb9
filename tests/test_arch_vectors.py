"""The network reproduces the official outputs on the reference vectors (SPEC section 10)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import require_shared
from safetensors.torch import load_file

from gpen_arch import load_gpen, read_state_dict
from gpen_arch.fast_forward import fast_forward

VECTORS = ["gpen_256_cm1_n0.25", "gpen_512_cm2_n0.25", "gpen_2048_cm2_n0.125"]


def load_vector(name: str):
    folder = require_shared("gpen", "vectors")
    meta = json.loads((folder / f"{name}.json").read_text())
    io = load_file(str(folder / f"{name}_io.safetensors"))
    x = ((io["input_rgb_u8"].float() / 255) - 0.5) / 0.5
    x = x.permute(2, 0, 1).unsqueeze(0).contiguous()  # [1, 3, S, S] RGB in [-1, 1]
    if "output" in io:
        expected, tolerance = io["output"], 1e-4
    else:
        expected, tolerance = io["output_fp16"].float(), 2e-3
    return folder / f"{name}.pth", meta, x, expected, tolerance


@pytest.fixture(scope="module", params=VECTORS)
def vector(request):
    return load_vector(request.param)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_reproduces_official_output(vector, fast):
    path, meta, x, expected, tolerance = vector
    model = load_gpen(read_state_dict(path))
    assert model.config.size == meta["size"]
    assert model.config.channel_multiplier == meta["channel_multiplier"]
    assert model.config.narrow == pytest.approx(meta["narrow"])
    model.use_fast_path = fast
    with torch.no_grad():
        out = model(x)
    assert out.shape == expected.shape
    error = (out - expected).abs().max().item()
    assert error <= tolerance, f"max abs error {error:.3g} > {tolerance}"


def test_fast_path_matches_reference_on_a_batch():
    path, _, x, expected, _ = load_vector("gpen_256_cm1_n0.25")
    model = load_gpen(read_state_dict(path))
    batch = torch.cat([x, x.flip(-1), 0.5 * x])
    with torch.no_grad():
        face_by_face = model(batch)  # on the CPU a batch runs face by face
        shared = fast_forward(model, batch)  # the GPU's batch path: three faces share one weight
        folded = fast_forward(with_attributes(model, fold_blur=True), batch)  # and its folded blurs
        subpixel = fast_forward(with_attributes(model, subpixel_upsample=True, fused_kernels=True), batch)
        single = fast_forward(model, batch[:1])  # batch 1 with sub-pixel upsampling
        with_attributes(model, fold_blur=None, subpixel_upsample=False, fused_kernels=False)
        model.use_fast_path = False
        reference = model(batch)
    assert (single - reference[:1]).abs().max().item() < 1e-4
    for fast in (face_by_face, shared, folded, subpixel):
        assert (fast - reference).abs().max().item() < 1e-4
        assert (fast[:1] - expected).abs().max().item() < 1e-4


def with_attributes(model, **attributes):
    for name, value in attributes.items():
        setattr(model, name, value)
    return model


def test_gradients_use_the_reference_path():
    path, _, x, _, _ = load_vector("gpen_256_cm1_n0.25")
    model = load_gpen(read_state_dict(path))
    x = x.clone().requires_grad_(True)
    model(x).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
