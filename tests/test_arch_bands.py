"""The banded (low-memory) forward gives the plain fast forward's outputs (gpen_arch/runtime/bands.py)."""

from __future__ import annotations

import pytest
import torch
from conftest import data_file
from helpers import random_gpen
from safetensors.torch import load_file

from gpen_arch import RELEASED_CONFIGS, estimate_forward_memory, load_gpen
from gpen_arch.config import GPENConfig
from gpen_arch.model import GPEN
from gpen_arch.runtime import bands as bands_module
from gpen_arch.runtime.bands import band_plan, band_rows, uses_bands
from gpen_arch.runtime.fast_forward import fast_forward
from gpen_arch.runtime.fast_plan import FastOptions, FastPlan

TOLERANCE = 1e-5  # fp32, banded against plain


def max_difference(model: GPEN, x: torch.Tensor) -> float:
    with torch.no_grad():
        plain = fast_forward(model, x, model.plan("cpu").replace(banded=False))
        banded = fast_forward(model, x, model.plan("cpu").replace(banded=True))
    assert banded.shape == plain.shape
    return (banded - plain).abs().max().item()


def test_compact_2048_vector_banded_equals_plain_and_official():
    folder = data_file("gpen", "compact")
    name = "compact_2048_cm2_n0.125_s64"
    model = load_gpen({k: v.float() for k, v in load_file(str(folder / f"{name}.safetensors")).items()})
    io = load_file(str(folder / f"{name}_io.safetensors"))
    small = io["input_rgb_u8"].float() / 255  # [256, 256, 3], repeated 8x along H and W
    x = ((small.repeat_interleave(8, 0).repeat_interleave(8, 1) - 0.5) / 0.5).permute(2, 0, 1)[None].contiguous()
    with torch.no_grad():
        plain = fast_forward(model, x, FastPlan(banded=False))
        banded = fast_forward(model, x, FastPlan(banded=True))
    assert (banded - plain).abs().max().item() <= TOLERANCE
    assert (banded[0, :, ::8, ::8] - io["output_every_8th"]).abs().max().item() <= 1e-4
    assert (banded[0, :, 960:1088, 960:1088] - io["output_center_128"]).abs().max().item() <= 1e-4


def test_full_width_512_banded_equals_plain():
    model = random_gpen(RELEASED_CONFIGS[512])
    x = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert max_difference(model, x) <= TOLERANCE


@pytest.mark.parametrize("options", [
    {}, {"channels_last": False}, {"fold_blur": True}, {"fold_blur": True, "subpixel_upsample": True},
], ids=["cpu-form", "channels-first", "folded", "subpixel"])
def test_many_thin_strips_equal_plain(monkeypatch, options):
    """Strips of the minimum height (8 rows) at every banded layer, on a batch of two (the shared-weight path)
    and on one face: every halo is exercised, edges and interior."""
    monkeypatch.setattr(bands_module, "BAND_ELEMENTS", 1)
    model = random_gpen(GPENConfig(size=128, channel_multiplier=2, narrow=0.0625))
    model.fast_options = FastOptions(**options)
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(2)) * 2 - 1
    assert band_rows(128, 8, 128) == bands_module.MIN_BAND_ROWS
    assert max_difference(model, x) <= TOLERANCE
    assert max_difference(model, x[1:]) <= TOLERANCE


def test_plan_and_policy():
    plan = band_plan(RELEASED_CONFIGS[2048])
    assert plan.encoder_layers == (1, 2)
    assert plan.decoder_groups == ((6,), (7, 8))  # 512 alone; 1024 and 2048 as one group
    assert band_plan(GPENConfig(size=32, channel_multiplier=1, narrow=0.5)) is None
    assert uses_bands(RELEASED_CONFIGS[512], "cpu") and uses_bands(RELEASED_CONFIGS[2048], torch.device("cpu"))
    assert not uses_bands(RELEASED_CONFIGS[256], "cpu")
    assert not uses_bands(RELEASED_CONFIGS[2048], "cuda")


@pytest.mark.parametrize(("size", "ratio"), [(512, 0.4), (1024, 0.35), (2048, 0.32)])
def test_banded_estimate_is_about_a_third_of_the_plain_one(size, ratio):
    config = RELEASED_CONFIGS[size]
    plain = estimate_forward_memory(config, batch_size=1, dtype=torch.float32)
    banded = estimate_forward_memory(config, batch_size=1, dtype=torch.float32, plan=FastPlan(banded=True))
    assert banded < ratio * plain, (size, banded, plain)
    assert banded > 0.2 * plain  # the input, the 1/2-size feature and the 1/4-size step's output stay in full
    strips = FastPlan(banded=True)
    assert estimate_forward_memory(config, batch_size=2, dtype=torch.float32, plan=strips) == pytest.approx(
        2 * banded, rel=1e-6)


def test_model_estimate_follows_the_forward_of_its_device():
    small = GPENConfig(size=512, channel_multiplier=1, narrow=0.0625)
    on_cpu = GPEN(small)  # the model's own estimate follows the forward it runs where it is
    assert on_cpu.estimate_memory(1) == estimate_forward_memory(small, batch_size=1, dtype=torch.float32,
                                                                plan=FastPlan(banded=True))
    with torch.device("meta"):
        elsewhere = GPEN(small)
    assert elsewhere.estimate_memory(1) == estimate_forward_memory(small, batch_size=1, dtype=torch.float32)
