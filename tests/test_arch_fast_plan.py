"""``FastOptions`` resolved into a ``FastPlan`` (gpen_arch/runtime/fast_plan.py): a pure function of the options, the
configuration, the device type and the dtype. CUDA is stood in for by device objects and strings (nothing runs)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gpen_arch import GPEN, RELEASED_CONFIGS, FastOptions, FastPlan, GPENConfig, resolve_plan

SMALL = GPENConfig(size=256, channel_multiplier=1, narrow=0.0625)  # below the banded size
LARGE = RELEASED_CONFIGS[512]
CUDA = (torch.device("cuda"), "cuda", "cuda:1")
CPU = (torch.device("cpu"), "cpu")


@pytest.mark.parametrize("device", CUDA)
def test_cuda_defaults_fold_subpixel_fused_and_cudnn(device):
    plan = resolve_plan(FastOptions(), LARGE, device, torch.float16)
    assert plan == FastPlan(fast=True, channels_last=True, fold_blur=True, subpixel=True, fused_kernels=True,
                            cudnn_benchmark=True, cuda_graphs=False, banded=False, per_face=False)


@pytest.mark.parametrize("device", CPU)
def test_cpu_defaults_plain_forms_banded_from_512_and_face_by_face(device):
    plan = resolve_plan(FastOptions(), LARGE, device, torch.float32)
    assert plan == FastPlan(fast=True, channels_last=True, fold_blur=False, subpixel=False, fused_kernels=False,
                            cudnn_benchmark=False, cuda_graphs=False, banded=True, winograd=True, per_face=True)
    assert not resolve_plan(FastOptions(), SMALL, device, torch.float32).banded  # under 512: no strips
    for dtype in (torch.bfloat16, torch.float16, torch.float64):  # Winograd's accuracy is checked in float32 only
        assert not resolve_plan(FastOptions(), LARGE, device, dtype).winograd


def test_other_devices_get_neither_the_gpu_forms_nor_the_cpu_ones():
    plan = resolve_plan(FastOptions(), LARGE, "mps", torch.float16)
    assert not (plan.fold_blur or plan.subpixel or plan.fused_kernels or plan.cudnn_benchmark or plan.banded
                or plan.winograd or plan.per_face)
    assert not resolve_plan(FastOptions(), LARGE, "cuda", torch.float32).winograd  # cuDNN chooses its own


def test_fused_kernels_by_default_only_for_the_dtypes_triton_takes():
    assert resolve_plan(FastOptions(), SMALL, "cuda", torch.bfloat16).fused_kernels
    assert not resolve_plan(FastOptions(), SMALL, "cuda", torch.float64).fused_kernels
    assert resolve_plan(FastOptions(fused_kernels=True), SMALL, "cuda", torch.float64).fused_kernels  # as asked


def test_subpixel_follows_folding_unless_set():
    assert not resolve_plan(FastOptions(fold_blur=False), SMALL, "cuda", torch.float16).subpixel
    assert resolve_plan(FastOptions(fold_blur=True), SMALL, "cpu", torch.float32).subpixel
    plan = resolve_plan(FastOptions(fold_blur=False, subpixel_upsample=True), SMALL, "cpu", torch.float32)
    assert plan.subpixel and not plan.fold_blur
    assert not resolve_plan(FastOptions(fold_blur=True, subpixel_upsample=False), SMALL, "cuda", torch.float16).subpixel


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("value", [True, False])
def test_explicit_settings_win_on_every_device(device, value):
    options = FastOptions(fold_blur=value, subpixel_upsample=value, fused_kernels=value, banded=value,
                          winograd=value, per_face=value, channels_last=value, use_fast_path=value)
    plan = resolve_plan(options, LARGE, device, torch.float32)
    assert (plan.fold_blur, plan.subpixel, plan.fused_kernels, plan.banded, plan.winograd, plan.per_face,
            plan.channels_last, plan.fast) == (value,) * 8


def test_cuda_only_switches_never_turn_on_elsewhere():
    options = FastOptions(cuda_graphs=True, cudnn_benchmark=True)
    assert not resolve_plan(options, SMALL, "cpu", torch.float32).cuda_graphs
    assert not resolve_plan(options, SMALL, "cpu", torch.float32).cudnn_benchmark
    cuda = resolve_plan(options, SMALL, "cuda", torch.float16)
    assert cuda.cuda_graphs and cuda.cudnn_benchmark
    assert not resolve_plan(FastOptions(cudnn_benchmark=False), SMALL, "cuda", torch.float16).cudnn_benchmark
    assert not resolve_plan(FastOptions(), SMALL, "cuda", torch.float16).cuda_graphs  # off unless asked


def test_banded_asked_for_a_config_without_strips_runs_plain():
    tiny = GPENConfig(size=32, channel_multiplier=1, narrow=0.125)
    assert resolve_plan(FastOptions(banded=True), tiny, "cpu", torch.float32).banded  # the decision as asked ...
    from gpen_arch.runtime.bands import band_plan

    assert band_plan(tiny) is None  # ... and fast_forward runs plain where no strip layout exists


def test_plan_is_hashable_resolved_once_and_options_are_validated():
    first = resolve_plan(FastOptions(), LARGE, torch.device("cuda", 0), torch.float16)
    assert first is resolve_plan(FastOptions(), LARGE, "cuda:1", torch.float16)  # cached per device type
    assert len({first, resolve_plan(FastOptions(), LARGE, "cpu", torch.float16)}) == 2
    assert all(isinstance(getattr(first, f.name), bool) for f in dataclasses.fields(FastPlan))
    with pytest.raises(ValueError, match=r"FastOptions.cuda_graphs must be one of \(True, False\), got None"):
        FastOptions(cuda_graphs=None)
    with pytest.raises(ValueError, match=r"FastOptions.fold_blur must be one of \(True, False, None\), got 'on'"):
        FastOptions(fold_blur="on")
    with pytest.raises(dataclasses.FrozenInstanceError):
        FastOptions().fold_blur = True


def test_model_resolves_its_own_options():
    model = GPEN(GPENConfig(size=64, channel_multiplier=1, narrow=0.25))
    assert model.plan("cuda") == resolve_plan(FastOptions(), model.config, "cuda", torch.float32)
    model.fast_options = model.fast_options.replace(fold_blur=False)
    assert not model.plan("cuda").subpixel and model.plan("cuda").fused_kernels
    assert model.plan("cuda", torch.float64) == resolve_plan(model.fast_options, model.config, "cuda", torch.float64)
