"""The fused Triton epilogue (``gpen_arch/ops/triton_epilogue.py``), checked without a GPU: Triton's interpreter
(``TRITON_INTERPRET=1``) runs the kernel on CPU tensors, so the same code the GPU compiles is held to the PyTorch form.

The interpreter must be switched on before Triton is imported, so each check runs in a fresh interpreter process.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO_ROOT, SKIP_CUDA

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason=SKIP_CUDA + "Triton is not installed (it ships with CUDA builds of PyTorch)")


def run_interpreted(code: str) -> str:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")]))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=600, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_fused_epilogue_matches_pytorch():
    out = run_interpreted("""
        import itertools, torch
        from gpen_arch.ops import triton_epilogue
        from gpen_arch.ops.epilogue import ConvOutput, styled_concat
        gen = torch.Generator().manual_seed(0)
        cl = torch.channels_last
        cases = itertools.product([False, True], [(1, False), (3, True)], [torch.float32, torch.float16], [5, 16])
        for subpixel, (n, pending), dtype, channels in cases:
            height, width = 6, 10
            rh, rw = (height // 2, width // 2) if subpixel else (height, width)
            raw = torch.randn(n, channels * (4 if subpixel else 1), rh, rw, generator=gen)
            scale = torch.rand(n, channels, generator=gen).to(dtype) + 0.5 if pending else None
            bias = torch.randn(channels, generator=gen).to(dtype) if pending else None
            result = ConvOutput(raw.to(dtype).contiguous(memory_format=cl), channels, subpixel, scale, bias)
            feature = torch.randn(n, channels, height, width, generator=gen).to(dtype).contiguous(memory_format=cl)
            alpha, noise_bias = torch.tensor([0.7]), torch.randn(channels, generator=gen).to(dtype)
            expected = styled_concat(result, feature, alpha, noise_bias, fused=False).float()
            out = torch.empty(expected.shape, dtype=dtype).contiguous(memory_format=cl)
            assert triton_epilogue.concat_epilogue(result, feature, alpha, noise_bias, out), "kernel did not run"
            error = (out.float() - expected).abs().max().item()
            bound = 1e-6 if dtype == torch.float32 else 8e-3  # one rounding against PyTorch's several
            assert error <= bound, (subpixel, n, dtype, channels, error)
        # what the kernel refuses, it leaves to PyTorch: NCHW tensors
        nchw = ConvOutput(torch.randn(1, 4, 6, 6), 4)
        out = torch.empty(1, 8, 6, 6)
        assert not triton_epilogue.concat_epilogue(nchw, torch.randn(1, 4, 6, 6), alpha, torch.zeros(4), out)
        print("ok")
    """)
    assert out.strip().endswith("ok")


def test_whole_network_with_fused_kernels_matches_the_official_output():
    out = run_interpreted("""
        import torch
        from gpen_arch import load_gpen, read_state_dict
        from gpen_arch.runtime.fast_forward import fast_forward
        from gpen_arch.runtime.fast_plan import FastPlan
        from gpen_arch.ops import triton_epilogue
        from helpers import load_compact
        path, _, x, checks = load_compact("compact_256_cm1_n0.0625_s64")
        expected = checks["output"][1]
        model = load_gpen(read_state_dict(path))
        calls = []
        original = triton_epilogue.concat_epilogue
        triton_epilogue.concat_epilogue = lambda *a: calls.append(original(*a)) or calls[-1]
        for subpixel in (False, True):
            plan = FastPlan(fused_kernels=True, subpixel=subpixel)
            got = fast_forward(model, torch.cat([x, x.flip(-1)]), plan)  # the batch path: scale and bias pending
            assert (got[:1] - expected).abs().max().item() < 1e-4
            got = fast_forward(model, x, plan)
            assert (got - expected).abs().max().item() < 1e-4
        assert calls and all(calls), calls
        print("ok", len(calls))
    """)
    assert out.startswith("ok")
