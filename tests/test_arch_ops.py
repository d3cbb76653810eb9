"""The fast ops equal their reference forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gpen_arch.ops.activation import fused_leaky_relu
from gpen_arch.ops.epilogue import ConvOutput, materialize, styled_concat
from gpen_arch.ops.modulated_conv import modulated_conv2d, modulated_conv2d_ref
from gpen_arch.ops.upfirdn2d import (
    blur,
    fold_blur_into_transposed_conv,
    make_blur_kernel,
    transposed_to_subpixel,
    upfirdn2d_ref,
    upsample2x,
)


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
@pytest.mark.parametrize("upsample", ["no", "blur", "folded", "subpixel"])
@pytest.mark.parametrize("demodulate", [False, True])
def test_modulated_conv_matches_reference(batch, upsample, demodulate):
    gen = torch.Generator().manual_seed(batch * 10 + len(upsample) * 2 + demodulate)
    mode, upsample = upsample, upsample != "no"
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
                           blur_kernel=kernel, bias=bias, input_gain=gain, fold_blur=mode == "folded",
                           subpixel=mode == "subpixel")
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_subpixel_conv_equals_the_folded_transposed_conv():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 7, 9, generator=gen)
    weight = fold_blur_into_transposed_conv(torch.randn(4, 5, 3, 3, generator=gen), make_blur_kernel(gain=4.0))
    expected = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=2)  # [2, 4, 14, 18]
    phases = F.conv2d(x, transposed_to_subpixel(weight), padding=1)  # [2, 16, 7, 9], phase-major channels
    got = phases.reshape(2, 2, 2, 4, 7, 9).permute(0, 3, 4, 1, 5, 2).reshape(2, 4, 14, 18)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    with pytest.raises(ValueError, match="6, 6"):
        transposed_to_subpixel(torch.zeros(4, 5, 3, 3))


def _pending_output(subpixel: bool, scale: bool, bias: bool, *, channels_last: bool, gen: torch.Generator):
    """A ConvOutput with the given debts and the plain [N, O, H, W] tensor it settles to."""
    n, out_ch, height, width = 2, 3, 6, 4
    settled = torch.randn(n, out_ch, height, width, generator=gen)
    raw = settled
    if subpixel:  # the inverse pixel shuffle in phase-major channel order
        raw = settled.reshape(n, out_ch, height // 2, 2, width // 2, 2).permute(0, 3, 5, 1, 2, 4)
        raw = raw.reshape(n, 4 * out_ch, height // 2, width // 2)
    s = torch.rand(n, out_ch, generator=gen) + 0.5 if scale else None
    b = torch.randn(out_ch, generator=gen) if bias else None
    expected = settled * (s.reshape(n, out_ch, 1, 1) if scale else 1) + (b.reshape(1, out_ch, 1, 1) if bias else 0)
    if channels_last:
        raw = raw.contiguous(memory_format=torch.channels_last)
    return ConvOutput(raw.clone(), out_ch, subpixel, s, b), expected


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "nchw"])
@pytest.mark.parametrize("subpixel", [False, True], ids=["plain", "subpixel"])
@pytest.mark.parametrize("scale,bias", [(False, False), (True, False), (False, True), (True, True)])
def test_epilogue_settles_scale_bias_and_shuffle(subpixel, scale, bias, channels_last):
    gen = torch.Generator().manual_seed(subpixel * 4 + scale * 2 + bias)
    result, expected = _pending_output(subpixel, scale, bias, channels_last=channels_last, gen=gen)
    assert result.shape == tuple(expected.shape)
    assert torch.allclose(materialize(result._replace(raw=result.raw.clone())), expected, atol=1e-6)
    activated = materialize(result._replace(raw=result.raw.clone()), activate=True)
    assert torch.allclose(activated, F.leaky_relu(expected, 0.2), atol=1e-6)

    feature = torch.randn(expected.shape, generator=gen)
    alpha, noise_bias = torch.tensor([0.7]), torch.randn(result.out_channels, generator=gen)
    if channels_last:
        feature = feature.contiguous(memory_format=torch.channels_last)
    # the StyledConv tail as the layers compute it: cat([x, alpha * f]) then the biased lrelu (its gain removed)
    full_bias = torch.cat([torch.zeros(result.out_channels), noise_bias])
    reference = fused_leaky_relu(torch.cat([expected, alpha * feature], 1), full_bias) / 2**0.5
    for fused in (False, True):  # fused falls back to PyTorch on the CPU
        got = styled_concat(result, feature, alpha, noise_bias, fused=fused)
        assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert torch.allclose(got, reference, atol=1e-6), (got - reference).abs().max()
