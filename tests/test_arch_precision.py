"""float16 and bfloat16 stay close to float32 (bounds measured on the 256 vectors, CPU)."""

from __future__ import annotations

import pytest
import torch
from helpers import load_compact

from gpen_arch import FastOptions, load_gpen, read_state_dict

# Measured on the full-width 256 vector (CPU, torch 2.14.1): fp16 max abs 2.0e-3 (mean 2.3e-4), bf16 max abs 2.0e-2
# (mean 2.3e-3), against an output range of about [-1.2, 1.3]. On the compact 256 vector of tests/data, used here:
# fp16 max abs 2.2-2.4e-3 (mean 2.6-3.3e-4), bf16 2.0-2.5e-2 (mean 4.1-5.5e-3) over the three forms, output range
# [-1.4, 1.0]. The bounds leave 2-5x headroom for other kernels.
BOUNDS = {torch.float16: (1e-2, 1.2e-3), torch.bfloat16: (1e-1, 1.2e-2)}


@pytest.mark.parametrize("form", ["default", "folded", "subpixel"])  # the GPU's forms too, run here on the CPU
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_close_to_float32(dtype, form):
    path, _, x, checks = load_compact("compact_256_cm1_n0.0625_s64")
    expected = checks["output"][1]
    model = load_gpen(read_state_dict(path), dtype=dtype)
    model.fast_options = FastOptions(fold_blur=True if form != "default" else None,
                                     subpixel_upsample=form == "subpixel")
    assert model.final_linear[0].weight.dtype == dtype
    assert all(b.dtype == dtype for b in model.buffers())
    with torch.no_grad():
        out = model(x)  # the input is cast to the model's dtype
    assert out.dtype == dtype
    diff = (out.float() - expected).abs()
    max_bound, mean_bound = BOUNDS[dtype]
    assert torch.isfinite(out).all()
    assert diff.max().item() < max_bound, f"max abs {diff.max().item():.3g}"
    assert diff.mean().item() < mean_bound, f"mean abs {diff.mean().item():.3g}"


def test_one_precision_table_and_auto_rule():
    from gpen_arch.runtime.precision import DTYPES, PRECISIONS, choose_dtype

    assert PRECISIONS == ("auto", "fp32", "fp16", "bf16")
    assert {name: choose_dtype(name, "cuda") for name in DTYPES} == {
        "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    # without the host's knowledge (the CLI, the benchmarks): fp16 on CUDA and MPS, fp32 elsewhere
    assert choose_dtype("auto", torch.device("cuda")) == choose_dtype("auto", "mps") == torch.float16
    assert choose_dtype("auto", "cpu") == torch.float32
    # with it (ComfyUI's should_use_fp16 / should_use_bf16, the nodes): fp16, else bf16, else fp32
    assert choose_dtype("auto", "cpu", fp16=True, bf16=True) == torch.float16
    assert choose_dtype("auto", "cuda", fp16=False, bf16=True) == torch.bfloat16
    assert choose_dtype("auto", "cuda", fp16=False, bf16=False) == torch.float32
    with pytest.raises(ValueError, match=r"precision must be one of auto, fp32, fp16, bf16, got 'half'"):
        choose_dtype("half", "cpu")
