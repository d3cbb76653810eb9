"""The memory estimate used to size batches tracks measured peaks."""

from __future__ import annotations

import pytest
import torch

from gpen_arch import RELEASED_CONFIGS, estimate_forward_memory, model_bytes
from gpen_arch.config import GPENConfig
from gpen_arch.model import GPEN

# Activation peaks measured with benchmarks/bench_gpen.py on an NVIDIA H100 (torch 2.11, cuDNN 9.19, channels-last,
# blurs folded): torch.cuda.max_memory_allocated() minus the weights, in MiB. (size, dtype, batch) -> MiB.
MEASURED_CUDA_MIB = {
    (512, torch.float32, 1): 425, (512, torch.float32, 4): 1598,
    (512, torch.float16, 1): 229, (512, torch.float16, 4): 816,
    (1024, torch.float32, 1): 829, (1024, torch.float32, 4): 3215,
    (1024, torch.float16, 1): 431, (1024, torch.float16, 4): 1624,
    (2048, torch.float32, 1): 1677, (2048, torch.float32, 4): 6610,
    (2048, torch.float16, 1): 855, (2048, torch.float16, 4): 3321,
}


@pytest.mark.parametrize("key", sorted(MEASURED_CUDA_MIB, key=str))
def test_estimate_within_25_percent_of_measured_peak(key):
    size, dtype, batch = key
    estimate = estimate_forward_memory(RELEASED_CONFIGS[size], batch_size=batch, dtype=dtype) / 2**20
    measured = MEASURED_CUDA_MIB[key]
    assert 0.75 * measured <= estimate <= 1.25 * measured, f"estimate {estimate:.0f} MiB vs measured {measured} MiB"


def test_estimate_scales_with_batch_dtype_and_size():
    cfg = RELEASED_CONFIGS[1024]
    one = estimate_forward_memory(cfg, batch_size=1, dtype=torch.float32)
    assert estimate_forward_memory(cfg, batch_size=3, dtype=torch.float32) == pytest.approx(3 * one, rel=1e-6)
    # half, but for the style path, which runs in float32 whatever the model's dtype
    assert estimate_forward_memory(cfg, batch_size=1, dtype=torch.bfloat16) == pytest.approx(one / 2, rel=1e-3)
    assert estimate_forward_memory(RELEASED_CONFIGS[2048], batch_size=1, dtype=torch.float32) > 1.8 * one
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        estimate_forward_memory(cfg, batch_size=0, dtype=torch.float32)


def test_model_method_uses_the_model_dtype():
    with torch.device("meta"):
        model = GPEN(GPENConfig(size=256, channel_multiplier=1, narrow=0.5))
    assert model.estimate_memory(2) == estimate_forward_memory(model.config, batch_size=2, dtype=torch.float32)
    # half, but for the style path, which runs in float32 whatever the model's dtype
    assert model.estimate_memory(2, torch.float16) * 2 == pytest.approx(model.estimate_memory(2), rel=1e-3)
    assert model_bytes(model) == 18_879_010 * 4 + 18 * 16 * 4  # SPEC section 3: parameters + 18 blur kernels


@pytest.mark.parametrize("banded", [False, True])
def test_the_meta_run_allocates_what_a_real_forward_allocates(banded):
    """The estimate is the fast forward itself run on meta tensors: the same code on real CPU tensors allocates the
    same bytes at its peak, and caches the same derived weights."""
    from gpen_arch.runtime.fast_forward import fast_forward
    from gpen_arch.runtime.fast_plan import FastPlan
    from gpen_arch.runtime.memory import OVERHEAD, _LiveBytes, derived_weight_bytes

    config = GPENConfig(size=256, channel_multiplier=1, narrow=0.25)
    plan = FastPlan(banded=banded)
    model = GPEN(config).eval()
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        fast_forward(model, x, plan)  # derives the weights
        counter = _LiveBytes(model.fast_path.derived)
        with counter:
            fast_forward(model, x, plan)
    estimate = estimate_forward_memory(config, batch_size=1, dtype=torch.float32, plan=plan)
    assert estimate == int(counter.peak * OVERHEAD)
    assert derived_weight_bytes(GPEN, config, plan, torch.float32) == model.fast_path.derived.nbytes()
