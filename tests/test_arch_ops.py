"""The fast ops equal their reference forms."""

from __future__ import annotations

import pytest
import torch

from gpen_arch.ops.modulated_conv import modulated_conv2d, modulated_conv2d_ref
from gpen_arch.ops.upfirdn2d import blur, make_blur_kernel, upfirdn2d_ref, upsample2x


def test_blur_kernels_sum_to_their_gain():
    assert make_blur_kernel(gain=4.0).sum().item() == pytest.approx(4.0)
    k = make_blur_kernel()
    assert torch.equal(k, k.t()) and k[0, 0].item() == pytest.approx(1 / 64)


def test_upfirdn2d_output_size():
    x = torch.randn(1, 2, 9, 9)
    k = make_blur_kernel()
    assert upfirdn2d_ref(x, k, pad=(2, 2)).shape[-1] == 10  # (H + p0 + p1 - 4) + 1
    assert upfirdn2d_ref(x, k, up=2, pad=(2, 1)).shape[-1] == 18
    assert upfirdn2d_ref(x, k, down=2, pad=(1, 1)).shape[-1] == 4


@pytest.mark.parametrize("pad", [1, 2])
def test_depthwise_blur_matches_reference(pad):
    x = torch.randn(2, 5, 17, 13)
    k = make_blur_kernel(gain=4.0)
    bias = torch.randn(5)
    expected = upfirdn2d_ref(x, k, pad=(pad, pad)) + bias.reshape(1, 5, 1, 1)
    assert torch.allclose(blur(x, k, pad=pad, bias=bias), expected, atol=1e-5)


def test_asymmetric_kernel_is_flipped_like_the_reference():
    x = torch.randn(1, 3, 8, 8)
    k = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    assert torch.allclose(blur(x, k, pad=2), upfirdn2d_ref(x, k, pad=(2, 2)), atol=1e-4)
    assert torch.allclose(upsample2x(x, k), upfirdn2d_ref(x, k, up=2, pad=(2, 1)), atol=1e-4)


def test_transposed_upsample_matches_zero_insertion():
    x = torch.randn(2, 3, 11, 7)
    k = make_blur_kernel(gain=4.0)
    assert torch.allclose(upsample2x(x, k), upfirdn2d_ref(x, k, up=2, pad=(2, 1)), atol=1e-5)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("demodulate", [False, True])
def test_modulated_conv_matches_reference(batch, upsample, demodulate):
    gen = torch.Generator().manual_seed(batch * 10 + upsample * 2 + demodulate)
    x = torch.randn(batch, 6, 9, 9, generator=gen)
    k = 1 if (not demodulate and not upsample) else 3
    weight = torch.randn(1, 4, 6, k, k, generator=gen)
    styles = torch.rand(batch, 6, generator=gen) + 0.5
    bias = torch.randn(4, generator=gen)
    kernel = make_blur_kernel(gain=4.0)
    scale = 1 / (6 * k * k) ** 0.5
    expected = modulated_conv2d_ref(x, weight, styles, scale=scale, demodulate=demodulate, upsample=upsample,
                                    blur_kernel=kernel) + bias.reshape(1, 4, 1, 1)
    gain = 2**0.5
    got = modulated_conv2d(x / gain, weight, styles, scale=scale, demodulate=demodulate, upsample=upsample,
                           blur_kernel=kernel, bias=bias, input_gain=gain)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
