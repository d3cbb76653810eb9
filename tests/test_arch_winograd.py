"""Winograd's F(4x4, 3x3) convolution (gpen_arch/ops/winograd.py): the same outputs as a direct convolution, in
either memory format, for any map size, and the forward that uses it on the CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import random_gpen

from gpen_arch.config import GPENConfig
from gpen_arch.ops import winograd
from gpen_arch.ops.winograd import filter_transform, winograd_conv3x3, worthwhile
from gpen_arch.runtime import bands
from gpen_arch.runtime.fast_forward import fast_forward

TOLERANCE = 1e-4  # absolute, on outputs of about unit size (a direct float32 convolution is off by ~3e-5 here)


def conv_case(shape, out_ch, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen)
    weight = torch.randn(out_ch, shape[1], 3, 3, generator=gen) / (9 * shape[1]) ** 0.5  # unit-size outputs
    bias = torch.randn(out_ch, generator=gen)
    return x, weight, bias


@pytest.mark.parametrize("chunk_bytes", [winograd.CHUNK_BYTES, 1], ids=["one-chunk", "a-tile-row-a-chunk"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize(("shape", "out_ch"), [
    ((1, 8, 16, 16), 4),  # whole tiles
    ((2, 5, 7, 9), 3),  # a batch; sizes that are not multiples of 4 (the tail is computed and cut)
    ((1, 6, 1, 1), 2),  # one pixel: all halo
    ((1, 260, 33, 30), 130),  # channels past the size rule, odd rows
])
def test_equals_a_float64_convolution(shape, out_ch, channels_last, chunk_bytes):
    x, weight, bias = conv_case(shape, out_ch)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    for b in (bias, None):
        out = winograd_conv3x3(x, weight, b, chunk_bytes=chunk_bytes)
        assert out.shape == expected.shape and out.dtype == x.dtype
        assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        want = expected if b is not None else expected - bias.double().reshape(1, -1, 1, 1)
        assert (out.double() - want).abs().max().item() <= TOLERANCE


def test_filter_transform_of_a_centre_tap():
    """``G g G^T`` of a filter that is 1 at its centre: the outer product of G's middle column with itself."""
    g = torch.zeros(1, 1, 3, 3)
    g[0, 0, 1, 1] = 1
    column = torch.tensor([0, -1 / 6, 1 / 6, 1 / 12, -1 / 12, 0])
    assert torch.allclose(filter_transform(g).reshape(6, 6), column[:, None] * column[None, :])


def test_wrong_weight_is_refused():
    with pytest.raises(ValueError, match=r"\[O, 4, 3, 3\]"):
        winograd_conv3x3(torch.zeros(1, 4, 8, 8), torch.zeros(2, 3, 3, 3))


def test_used_only_where_it_pays():
    big = torch.zeros(1, 256, 32, 32)
    assert worthwhile(big, torch.zeros(128, 256, 3, 3))
    assert not worthwhile(big, torch.zeros(64, 256, 3, 3))  # too few outputs
    assert not worthwhile(big[:, :128], torch.zeros(128, 128, 3, 3))  # too few inputs
    assert not worthwhile(big[..., :16, :16], torch.zeros(128, 256, 3, 3))  # too small a map
    assert not worthwhile(big, torch.zeros(128, 256, 1, 1))


def test_forward_with_winograd_matches_the_direct_forward(monkeypatch):
    """A small-width network with the size rule lowered so that every 3x3 decoder conv from 8x8 up runs by
    Winograd, in one piece and in the thinnest strips (strip edges cut through Winograd's tiles)."""
    monkeypatch.setattr(bands, "BAND_ELEMENTS", 1)
    monkeypatch.setattr(winograd, "MIN_IN_CHANNELS", 1)
    monkeypatch.setattr(winograd, "MIN_OUT_CHANNELS", 1)
    monkeypatch.setattr(winograd, "MIN_PIXELS", 64)
    model = random_gpen(GPENConfig(size=128, channel_multiplier=2, narrow=0.125))
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(3)) * 2 - 1
    calls = []
    original = winograd.winograd_conv3x3
    monkeypatch.setattr("gpen_arch.ops.modulated_conv.winograd_conv3x3",
                        lambda *a, **k: calls.append(a[0].shape) or original(*a, **k))
    plan = model.plan("cpu")
    with torch.no_grad():
        direct = fast_forward(model, x, plan.replace(winograd=False))
        assert not calls
        for banded in (False, True):
            out = fast_forward(model, x, plan.replace(winograd=True, banded=banded))
            assert (out - direct).abs().max().item() <= TOLERANCE
        assert calls
