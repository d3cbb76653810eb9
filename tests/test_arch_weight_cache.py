"""Derived weights (folded blurs, sub-pixel phases, demodulation norms, style tables) are built once, rebuilt when the
weights change, dropped when the model moves, and counted by ``GPEN.derived_weight_bytes``."""

from __future__ import annotations

import pytest
import torch
from helpers import random_gpen

from gpen_arch import GPEN, FastOptions, GPENConfig
from gpen_arch.ops import modulated_conv, upfirdn2d

CONFIG = GPENConfig(size=32, channel_multiplier=1, narrow=0.125)


def folding(model: GPEN, subpixel: bool) -> GPEN:
    model.fast_options = FastOptions(fold_blur=True, subpixel_upsample=subpixel)
    return model


@pytest.mark.parametrize("subpixel", [False, True])
def test_built_once_and_counted(monkeypatch, subpixel):
    model = folding(random_gpen(CONFIG, seed=0), subpixel)
    folds = []
    original = upfirdn2d.fold_blur_into_transposed_conv
    for module in (upfirdn2d, modulated_conv):  # the encoder's folds and the decoder's
        monkeypatch.setattr(module, "fold_blur_into_transposed_conv", lambda *a: folds.append(1) or original(*a))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        first = model(x)
        built = len(folds)
        second = model(x)
        batch = model(torch.cat([x, x]))  # the batch path shares the same cached weights
    assert built == CONFIG.num_decoder_steps + CONFIG.num_encoder_layers - 1  # one per folded convolution
    assert len(folds) == built  # and no more on the second and third forward
    assert torch.equal(first, second)
    assert (batch[0] - first[0]).abs().max() < 1e-5
    assert model.fast_path.derived.nbytes() == model.derived_weight_bytes("cpu") > 0


def test_rebuilt_when_weights_change_and_dropped_when_moved():
    model = folding(random_gpen(CONFIG, seed=0), True)
    other = random_gpen(CONFIG, seed=1)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        model(x)
        model.load_state_dict(other.state_dict())  # in-place copies into the same parameters
        got = model(x)
        other.fast_options = FastOptions(use_fast_path=False)
        expected = other(x)
    assert (got - expected).abs().max() < 1e-4
    assert len(model.fast_path.derived) > 0
    model.to(torch.float64)
    assert len(model.fast_path.derived) == 0


def test_only_the_small_tables_where_nothing_folds():
    model = random_gpen(CONFIG, seed=0)
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    assert len(model.fast_path.derived) > 0  # style table, demodulation norms, scaled mapping weights
    assert model.fast_path.derived.nbytes() == model.derived_weight_bytes("cpu")
    assert model.derived_weight_bytes("cuda") > model.derived_weight_bytes("cpu")  # folds by default there


def test_model_built_under_inference_mode():
    # ComfyUI runs nodes under torch.inference_mode(): its parameters are inference tensors, with no version counter
    with torch.inference_mode():
        model = folding(random_gpen(CONFIG, seed=0), True)
        assert model.final_linear[0].weight.is_inference()
        x = torch.rand(1, 3, 32, 32) * 2 - 1
        first = model(x)
        assert torch.equal(model(x), first)
    with torch.no_grad():
        assert torch.equal(model(x), first)
    model.fast_options = FastOptions(use_fast_path=False)
    with torch.inference_mode():
        assert (model(x) - first).abs().max() < 1e-4


@pytest.mark.parametrize(("options", "dtype"), [
    (FastOptions(), torch.float32), (FastOptions(fold_blur=True), torch.float32),
    (FastOptions(fold_blur=False, subpixel_upsample=True), torch.float32),
    (FastOptions(fold_blur=True, subpixel_upsample=True), torch.bfloat16),
], ids=["cpu-plan", "folded", "subpixel-only", "subpixel-bf16"])
def test_estimate_is_exactly_what_a_forward_caches(options, dtype):
    """``derived_weight_bytes`` runs the fast forward's own builders on a meta model: it must match, byte for
    byte, what a real CPU forward keeps, for the CPU plan and for folded plans forced on the CPU."""
    model = random_gpen(CONFIG, seed=0).to(dtype)
    model.fast_options = options
    predicted = model.derived_weight_bytes("cpu")
    with torch.no_grad():
        model(torch.rand(2, 3, 32, 32, dtype=dtype) * 2 - 1)
    assert model.fast_path.derived.nbytes() == predicted > 0


@pytest.mark.parametrize("options", [FastOptions(), FastOptions(fold_blur=True, subpixel_upsample=True),
                                     FastOptions(fold_blur=True, banded=True)],
                         ids=["cpu-plan", "subpixel", "folded-banded"])
def test_in_place_load_state_dict_after_a_forward_changes_the_next_output(options):
    """``load_state_dict`` copies into the same parameters (same storage): everything derived must follow."""
    model, other = random_gpen(CONFIG, seed=0), random_gpen(CONFIG, seed=1)
    model.fast_options = options
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    other.fast_options = FastOptions(use_fast_path=False)
    with torch.no_grad():
        before = model(x)
        expected = other(x)
        pointers = [p.data_ptr() for p in model.parameters()]
        model.load_state_dict(other.state_dict())
        assert [p.data_ptr() for p in model.parameters()] == pointers  # in place, as ComfyUI would
        after = model(x)
    assert (after - before).abs().max() > 1e-3
    assert (after - expected).abs().max() < 1e-4


def test_in_place_load_under_inference_mode_is_seen():
    """Inference tensors have no version counter: the load hook is what resets the derived weights."""
    with torch.inference_mode():
        model, other = folding(random_gpen(CONFIG, seed=0), True), random_gpen(CONFIG, seed=1)
        other.fast_options = FastOptions(use_fast_path=False)
        x = torch.rand(1, 3, 32, 32) * 2 - 1
        model(x)
        model.load_state_dict(other.state_dict())
        assert (model(x) - other(x)).abs().max() < 1e-4


def test_skip_kernel_form_is_rechecked_when_the_kernels_change():
    model = random_gpen(CONFIG, seed=0)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        model(x)
        for rgb in model.generator.to_rgbs:
            rgb.upsample.kernel.mul_(0.5)  # in place: a non-standard kernel, the general form must run
        got = model(x)
        model.fast_options = FastOptions(use_fast_path=False)
        expected = model(x)
    assert (got - expected).abs().max() < 1e-4
