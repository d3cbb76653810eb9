"""The network reproduces the official outputs: on the compact vectors in tests/data (every one of them, reduced
width and style size 64) and on the full-width vectors in ../shared (big data). docs/network.md describes it."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import DATA, require_shared
from helpers import load_compact, to_input
from safetensors.torch import load_file

from gpen_arch import infer_config, load_gpen, read_state_dict
from gpen_arch.runtime.fast_forward import fast_forward
from gpen_arch.runtime.fast_plan import FastOptions, FastPlan

VECTORS = ["gpen_256_cm1_n0.25", "gpen_512_cm2_n0.25", "gpen_2048_cm2_n0.125"]
COMPACT = sorted(p.stem for p in (DATA / "gpen" / "compact").glob("*.json"))


def load_vector(name: str):
    folder = require_shared("gpen", "vectors")
    meta = json.loads((folder / f"{name}.json").read_text())
    io = load_file(str(folder / f"{name}_io.safetensors"))
    x = to_input(io["input_rgb_u8"])  # [1, 3, S, S] RGB in [-1, 1]
    if "output" in io:
        expected, tolerance = io["output"], 1e-4
    else:
        expected, tolerance = io["output_fp16"].float(), 2e-3
    return folder / f"{name}.pth", meta, x, expected, tolerance


def test_every_compact_vector_is_checked():
    assert COMPACT == ["compact_2048_cm2_n0.125_s64", "compact_256_cm1_n0.0625_s64", "compact_512_cm2_n0.0625_s64"]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
@pytest.mark.parametrize("name", COMPACT)
def test_reproduces_the_compact_official_outputs(name, fast):
    path, meta, x, checks = load_compact(name)
    state = read_state_dict(path)
    config = infer_config(state)  # every hyper-parameter from the shapes: style_dim is 64 here, not the usual 512
    assert (config.size, config.channel_multiplier, config.style_dim, config.n_mlp) == (
        meta["size"], meta["channel_multiplier"], meta["style_dim"], meta["n_mlp"])
    assert config.narrow == pytest.approx(meta["narrow"])
    model = load_gpen(state)  # stored as float16, run in float32
    model.fast_options = FastOptions(use_fast_path=fast)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 3, meta["size"], meta["size"]) and out.dtype == torch.float32
    for what, (take, expected) in checks.items():
        error = (take(out) - expected).abs().max().item()
        assert error <= 1e-4, f"{name} {what}: max abs error {error:.3g} > 1e-4"


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
    model.fast_options = FastOptions(use_fast_path=fast)
    with torch.no_grad():
        out = model(x)
    assert out.shape == expected.shape
    error = (out - expected).abs().max().item()
    assert error <= tolerance, f"max abs error {error:.3g} > {tolerance}"


def test_fast_path_matches_reference_on_a_batch():
    path, _, x, checks = load_compact("compact_256_cm1_n0.0625_s64")
    expected = checks["output"][1]
    model = load_gpen(read_state_dict(path))
    batch = torch.cat([x, x.flip(-1), 0.5 * x])
    with torch.no_grad():
        face_by_face = model(batch)  # on the CPU a batch runs face by face
        shared = fast_forward(model, batch, model.plan("cpu"))  # the GPU's batch path: three faces share one weight
        folded = fast_forward(model, batch, FastPlan(fold_blur=True))  # and its folded blurs
        subpixel_plan = FastPlan(fold_blur=True, subpixel=True, fused_kernels=True)
        subpixel = fast_forward(model, batch, subpixel_plan)
        single = fast_forward(model, batch[:1], subpixel_plan)  # batch 1 with sub-pixel upsampling
        model.fast_options = FastOptions(use_fast_path=False)
        reference = model(batch)
    assert (single - reference[:1]).abs().max().item() < 1e-4
    for fast in (face_by_face, shared, folded, subpixel):
        assert (fast - reference).abs().max().item() < 1e-4
        assert (fast[:1] - expected).abs().max().item() < 1e-4


def test_gradients_use_the_reference_path():
    path, _, x, _ = load_compact("compact_256_cm1_n0.0625_s64")
    model = load_gpen(read_state_dict(path))
    x = x.clone().requires_grad_(True)
    model(x).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
