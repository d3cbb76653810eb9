"""The GPU-only forms of the fast forward, on a CUDA device: folded blurs, sub-pixel upsampling, the compiled fused
Triton epilogue and CUDA-graph replay, each held to the reference forward on the CPU.

CI has no GPU, so these skip there; ``benchmarks/gpu_check.sh`` runs them on a machine that has one.
"""

from __future__ import annotations

import importlib.util
import itertools

import pytest
import torch
from conftest import SKIP_CUDA
from helpers import random_gpen_state

from gpen_arch import FastOptions, GPENConfig, load_gpen
from gpen_arch.ops import triton_epilogue

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason=SKIP_CUDA + "needs a CUDA device")

HAS_TRITON = importlib.util.find_spec("triton") is not None
CONFIG = GPENConfig(size=256, channel_multiplier=2, narrow=0.5)  # every kind of layer, small enough to be quick


@pytest.fixture(scope="module")
def weights_and_reference():
    state = random_gpen_state(CONFIG, seed=0)  # nonzero noise weights and biases, so every path contributes
    x = torch.rand(3, 3, CONFIG.size, CONFIG.size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    reference = load_gpen(state)
    reference.fast_options = FastOptions(use_fast_path=False)
    with torch.no_grad():
        expected = reference(x)
    return state, x, expected


@pytest.fixture(autouse=True)
def exact_float32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("subpixel,fused,batch", list(itertools.product([False, True], [False, True], [1, 3])))
def test_gpu_forms_match_the_reference(weights_and_reference, subpixel, fused, batch):
    if fused and not HAS_TRITON:
        pytest.skip(SKIP_CUDA + "Triton is not installed: the fused epilogue falls back to PyTorch")
    state, x, expected = weights_and_reference
    model = load_gpen(state, device="cuda")
    model.fast_options = FastOptions(subpixel_upsample=subpixel, fused_kernels=fused)
    with torch.no_grad():
        got = model(x[:batch].cuda()).cpu()
    assert not triton_epilogue._state["failed"], "the fused kernel failed and fell back"
    error = (got - expected[:batch]).abs().max().item()
    assert error < 1e-4, error


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_half_precision_close_to_float32(weights_and_reference, dtype):
    state, x, expected = weights_and_reference
    model = load_gpen(state, device="cuda", dtype=dtype)
    with torch.no_grad():
        plain = model(x.cuda()).float().cpu()
        model.fast_options = FastOptions(subpixel_upsample=True, fused_kernels=True)
        fused = model(x.cuda()).float().cpu()
    bound = 5e-2 if dtype == torch.float16 else 2.5e-1  # bf16 keeps 8 bits of mantissa
    assert (plain - expected).abs().max().item() < bound
    assert (fused - expected).abs().max().item() < bound
    assert (fused - expected).abs().mean() <= 1.5 * (plain - expected).abs().mean() + 1e-4


def test_cuda_graph_replays_the_fused_forward(weights_and_reference):
    state, x, expected = weights_and_reference
    model = load_gpen(state, device="cuda")
    model.fast_options = FastOptions(subpixel_upsample=True, fused_kernels=True, cuda_graphs=True)
    with torch.no_grad():
        first = model(x[:1].cuda()).cpu()
        second = model(x[1:2].cuda()).cpu()  # replay with new input
    assert (first - expected[:1]).abs().max().item() < 1e-4
    assert (second - expected[1:2]).abs().max().item() < 1e-4


def test_cuda_graph_pads_a_partial_batch_and_runs_a_small_one_eagerly(weights_and_reference):
    state, x, expected = weights_and_reference
    model = load_gpen(state, device="cuda")
    model.fast_options = FastOptions(cuda_graphs=True)
    with torch.no_grad():
        full = model(x.cuda()).cpu()  # captured at 3 faces
        padded = model(x[1:3].cuda()).cpu()  # replayed in the 3-face graph
        eager = model(x[2:3].cuda()).cpu()  # under half the graph's size: run as is
    assert model.fast_path.graph_runner.captures == 1
    assert (full - expected).abs().max().item() < 1e-4
    assert (padded - expected[1:3]).abs().max().item() < 1e-4
    assert (eager - expected[2:3]).abs().max().item() < 1e-4


def test_defaults_on_cuda_use_the_fast_forms_with_cudnn_benchmark_inside_only(weights_and_reference):
    from gpen_arch.runtime.fast_forward import fast_forward
    from gpen_arch.runtime.weight_cache import FastPath

    state, x, expected = weights_and_reference
    model = load_gpen(state, device="cuda")
    seen = []

    def spy(m, inp, plan):
        seen.append(torch.backends.cudnn.benchmark)
        return fast_forward(m, inp, plan)

    model.fast_path = FastPath(forward=spy)  # the forward injected: nothing patched
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        with torch.no_grad():
            got = model(x.cuda()).cpu()
        assert seen == [True] and torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = saved
    plan = model.plan("cuda")
    assert plan.subpixel and plan.fused_kernels and plan.fold_blur
    assert not triton_epilogue._state["failed"] or not HAS_TRITON
    assert (got - expected).abs().max().item() < 1e-4


def test_non_finite_input_on_cuda_raises_after_the_forward(weights_and_reference):
    state, x, expected = weights_and_reference
    model = load_gpen(state, device="cuda")
    bad = x[:1].clone().cuda()
    bad[0, 1, 5, 7] = float("nan")
    with torch.no_grad(), pytest.raises(ValueError, match="GPEN input contains NaN or infinite values"):
        model(bad)  # the answer is read from pinned host memory behind an event, after the forward is queued
    with torch.no_grad():
        assert (model(x[:1].cuda()).cpu() - expected[:1]).abs().max().item() < 1e-4
