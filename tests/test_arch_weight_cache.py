"""Derived weights (folded blurs, sub-pixel phases, demodulation norms, style tables) are built once, rebuilt when the weights
change, dropped when the model moves, and counted by ``GPEN.derived_weight_bytes``."""

from __future__ import annotations

import pytest
import torch
from helpers import random_gpen

from gpen_arch import GPEN, GPENConfig
from gpen_arch.ops import modulated_conv, upfirdn2d

CONFIG = GPENConfig(size=32, channel_multiplier=1, narrow=0.125)


def folding(model: GPEN, subpixel: bool) -> GPEN:
    model.fold_blur, model.subpixel_upsample = True, subpixel
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
    assert model.derived_weights.nbytes() == model.derived_weight_bytes("cpu") > 0


def test_rebuilt_when_weights_change_and_dropped_when_moved():
    model = folding(random_gpen(CONFIG, seed=0), True)
    other = random_gpen(CONFIG, seed=1)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        model(x)
        model.load_state_dict(other.state_dict())  # in-place copies into the same parameters
        got = model(x)
        other.use_fast_path = False
        expected = other(x)
    assert (got - expected).abs().max() < 1e-4
    assert len(model.derived_weights) > 0
    model.to(torch.float64)
    assert len(model.derived_weights) == 0


def test_only_the_small_tables_where_nothing_folds():
    model = random_gpen(CONFIG, seed=0)
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    assert len(model.derived_weights) > 0  # style table, demodulation norms, scaled mapping weights
    assert model.derived_weights.nbytes() == model.derived_weight_bytes("cpu")
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
    model.use_fast_path = False
    with torch.inference_mode():
        assert (model(x) - first).abs().max() < 1e-4
