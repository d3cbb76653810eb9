"""The optimised inference forward of GPEN (the default when gradients are off).

Same maths as ``GPEN.reference_forward`` (tests hold the two within 1e-4 of each other and of the official outputs),
computed with fewer passes over the large full-resolution tensors:

- every FIR blur is one depthwise convolution, never a reshape to one channel with zero-insertion copies; on GPUs
  (``FastPlan.fold_blur``) the blurs are folded into the neighbouring stride-2 convolutions instead, which costs more
  multiply-adds but runs on tensor cores and saves a pass over the largest maps;
- biases ride along in the convolutions (``conv2d(bias=...)``, the blur's depthwise conv), so the fused lrelu is a
  single in-place ``leaky_relu_``; its ``sqrt(2)`` gain is folded into the weights of whatever consumes the
  activation (``input_gain``), so activations here are the true values divided by ``sqrt(2)``;
- the "noise" concat is written into one preallocated tensor by the convolution's epilogue (``ops/epilogue.py``):
  bias, demodulation scale, activation and, for sub-pixel upsampling, the pixel shuffle ride along in the passes that
  fill it (one fused Triton kernel with ``FastPlan.fused_kernels``);
- what depends on the weights alone (folded blurs, every layer's stacked modulation weights, demodulation norms) is
  derived once and kept in ``model.fast_path.derived`` (``weight_cache.py``), so a forward launches few small kernels;
- encoder features are released as soon as the decoder has used them; with ``FastPlan.banded`` (the CPU default
  from 512 up) the three largest resolutions run in horizontal strips with exact halos (``bands.py``), so their
  activations never exist in full: the same outputs with under a third of the activation memory;
- on the CPU in float32 (``FastPlan.winograd``) the large 3x3 decoder convolutions run by Winograd's F(4x4, 3x3)
  (``ops/winograd.py``): a quarter of the multiplications, as batched matrix products;
- styles, modulation and demodulation are computed in float32 even when the network runs in float16/bfloat16;
- batches share one weight (modulation as input scaling, demodulation as output scaling), see
  ``ops/modulated_conv.py``.

Every choice comes from the ``FastPlan`` passed in (``fast_plan.py``), resolved once by the caller; nothing here
reads the model's options.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F

from ..interrupt import block_done
from ..layers import Blur, ConvLayer, EqualConv2d, EqualLinear, FusedLeakyReLU, StyledConv, ToRGB
from ..ops.activation import GAIN, leaky_relu_unscaled_
from ..ops.epilogue import styled_concat
from ..ops.modulated_conv import modulated_conv2d, modulated_conv2d_raw
from ..ops.upfirdn2d import blur, fold_blur_into_strided_conv, make_blur_kernel, upsample2x, upsample2x_bilinear
from .bands import DecoderStep, band_plan, band_rows, decoder_group_in_bands, encoder_layer_in_bands
from .fast_plan import FastPlan


def _memo(model, layer: torch.nn.Module, source: torch.Tensor):
    """The ``cache`` argument of ``modulated_conv2d`` for one layer: derived weights kept in ``model``."""
    cache = model.fast_path.derived
    return lambda form, build: cache.get((id(layer), form), source, build)


def _linear_fp32(model, layer: EqualLinear, x: torch.Tensor) -> torch.Tensor:
    """EqualLinear in float32 (the style path is tiny; float32 keeps fp16/bf16 models accurate), its scaled weight
    and bias derived once."""
    weight = _memo(model, layer, layer.weight)("scaled weight", lambda: layer.weight.float() * layer.scale)
    bias = _memo(model, layer, layer.bias)("scaled bias", lambda: layer.bias.float() * layer.lr_mul)
    out = torch.addmm(bias, x.float(), weight.t())
    if layer.activate:
        return F.leaky_relu_(out, 0.2).mul_(GAIN)
    return out


def _encoder_layer(model, layer: ConvLayer, x: torch.Tensor, input_gain: float, fold_blur: bool) -> torch.Tensor:
    """``layer(x * input_gain) / sqrt(2)``: ``[N, Cin, H, W]`` -> ``[N, Cout, H', W']``."""
    if not layer.downsample:
        conv, act = cast(EqualConv2d, layer[0]), cast(FusedLeakyReLU, layer[1])  # Sequential's items are Modules
        out = F.conv2d(x, conv.weight * (conv.scale * input_gain), act.bias, padding=conv.padding)
        return leaky_relu_unscaled_(out)
    blur_layer, conv, act = cast(Blur, layer[0]), cast(EqualConv2d, layer[1]), cast(FusedLeakyReLU, layer[2])
    if fold_blur:  # one 6x6 stride-2 conv instead of blur + 3x3 stride-2 conv
        def build() -> torch.Tensor:
            folded = fold_blur_into_strided_conv(conv.weight.float() * (conv.scale * input_gain),
                                                 blur_layer.kernel.float())
            return folded.to(x.dtype)

        weight = _memo(model, layer, conv.weight)(f"folded*{input_gain}", build)
        out = F.conv2d(x, weight, act.bias, stride=2, padding=blur_layer.pad[0])
        return leaky_relu_unscaled_(out)
    x = blur(x, blur_layer.kernel, pad=blur_layer.pad[0])  # [N, Cin, H+1, W+1]
    out = F.conv2d(x, conv.weight * (conv.scale * input_gain), act.bias, stride=2)
    return leaky_relu_unscaled_(out)


def _modulated_layers(model) -> list[StyledConv | ToRGB]:
    gen = model.generator
    return [gen.conv1, gen.to_rgb1, *gen.convs, *gen.to_rgbs]


def _style_table(model) -> tuple[dict[int, tuple[int, int]], torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
    """The modulation linears of every StyledConv and ToRGB stacked, so that one ``addmm`` gives all their styles:
    ``{id(layer): (start, end)}`` columns of the product, the stacked weights ``[sum I, style_dim]`` and biases
    ``[sum I]`` (float32), and each StyledConv's feature gain ``alpha * sqrt(2)`` (one-element float32 tensors).
    The stacks are derived once (``model.fast_path.derived``): per forward, one kernel instead of a handful per
    layer."""
    layers = _modulated_layers(model)
    styled = [layer for layer in layers if isinstance(layer, StyledConv)]
    sources = [t for layer in layers for t in (layer.conv.modulation.weight, layer.conv.modulation.bias)]
    sources += [layer.noise.weight for layer in styled]
    cache = model.fast_path.derived
    stamp = cache.stamp(*sources)

    def stacked_weights() -> torch.Tensor:  # [sum I, style_dim] float32, EqualLinear's scale applied
        return torch.cat([layer.conv.modulation.weight.float() * layer.conv.modulation.scale for layer in layers])

    def stacked_biases() -> torch.Tensor:  # [sum I] float32, EqualLinear's lr_mul applied
        return torch.cat([layer.conv.modulation.bias.float() * layer.conv.modulation.lr_mul for layer in layers])

    def alphas() -> torch.Tensor:  # the features arrive divided by sqrt(2)
        return torch.cat([layer.noise.weight.float().reshape(1) * GAIN for layer in styled])

    weights = cache.get("style weights", stamp, stacked_weights)
    biases = cache.get("style biases", stamp, stacked_biases)
    gains = cache.get("feature gains", stamp, alphas)
    spans, start = {}, 0
    for layer in layers:
        width = layer.conv.modulation.weight.shape[0]
        spans[id(layer)] = (start, start + width)
        start += width
    return spans, weights, biases, {id(layer): gains[i:i + 1] for i, layer in enumerate(styled)}


def _styled_conv(
    model, layer: StyledConv, x: torch.Tensor, styles: torch.Tensor, alpha: torch.Tensor, feature: torch.Tensor, *,
    input_gain: float, fold_blur: bool, subpixel: bool, fused: bool, winograd: bool,
) -> torch.Tensor:
    """``layer(x * input_gain, w, feature * sqrt(2)) / sqrt(2)``: ``[N, I, H, W]`` -> ``[N, 2*O, H', W']``."""
    conv = layer.conv
    out_ch = conv.weight.shape[1]
    bias = layer.activate.bias
    result = modulated_conv2d_raw(
        x, conv.weight, styles, scale=conv.scale, demodulate=True, upsample=conv.upsample,
        blur_kernel=conv.blur.kernel if conv.upsample else None, bias=bias[:out_ch], input_gain=input_gain,
        fold_blur=fold_blur, subpixel=subpixel and conv.upsample, winograd=winograd,
        cache=_memo(model, layer, conv.weight),
    )
    return styled_concat(result, feature, alpha, bias[out_ch:], fused=fused)


def _to_rgb(
    layer: ToRGB, x: torch.Tensor, styles: torch.Tensor, skip: torch.Tensor | None, *, input_gain: float,
    bilinear: bool,
) -> torch.Tensor:
    """``layer(x * input_gain, w, skip)``: ``[N, I, H, W]`` -> ``[N, 3, H, W]``."""
    conv = layer.conv
    out = modulated_conv2d(x, conv.weight, styles, scale=conv.scale, demodulate=False, upsample=False,
                           bias=layer.bias.reshape(3), input_gain=input_gain)
    if skip is not None:
        out.add_(upsample2x_bilinear(skip) if bilinear else upsample2x(skip, layer.upsample.kernel))
    return out


def _has_standard_skip_kernels(model) -> bool:
    """Whether every ToRGB upsampler holds the standard gain-4 [1, 3, 3, 1] kernel (a derived fact, checked again
    when the kernels change). Meta tensors (a shape-only run, ``memory.py``) have no values: the general form
    serves them (the same shapes, and far quicker there than bilinear interpolation's Python meta kernel)."""
    kernels = [rgb.upsample.kernel for rgb in model.generator.to_rgbs]
    if any(k.is_meta for k in kernels):
        return False

    def check() -> bool:
        standard = make_blur_kernel(gain=4.0)
        return all(torch.allclose(k.detach().float().cpu(), standard) for k in kernels)

    return model.fast_path.derived.get("standard skip kernels", model.fast_path.derived.stamp(*kernels), check)


@torch.no_grad()
def fast_forward(model, x: torch.Tensor, plan: FastPlan) -> torch.Tensor:
    """``model``: a GPEN; ``x``: ``[N, 3, S, S]`` in the model's dtype and device; ``plan``: the decisions to run
    from (``model.plan(device, dtype)``); its ``fast``, ``per_face``, ``cudnn_benchmark`` and ``cuda_graphs`` are the
    caller's business (``GPEN.forward``). Returns ``[N, 3, S, S]``."""
    memory_format = torch.channels_last if plan.channels_last else torch.contiguous_format
    fold, subpixel, fused = plan.fold_blur, plan.subpixel, plan.fused_kernels
    bilinear = _has_standard_skip_kernels(model)
    bands = band_plan(model.config) if plan.banded else None
    size = model.config.size
    layers = model.encoder_layers()

    x = x.contiguous(memory_format=memory_format)
    features: dict[int, torch.Tensor] = {}  # encoder outputs / sqrt(2) by resolution, from S x S down to 4 x 4

    def recompute_ecd0(a: int, b: int) -> torch.Tensor:  # rows [a, b) of the S x S feature, from the input
        return _encoder_layer(model, layers[0], x[:, :, a:b], 1.0, fold)

    out = x if bands is not None else _encoder_layer(model, layers[0], x, 1.0, fold)
    if bands is None:
        features[size] = out
        block_done()
    for i, layer in enumerate(layers[1:], start=1):
        if bands is not None and i in bands.encoder_layers:
            source = recompute_ecd0 if i == 1 else (lambda a, b, full=out: full[:, :, a:b])
            channels = model.config.channels(size >> i)
            out = encoder_layer_in_bands(lambda strip, layer=layer: _encoder_layer(model, layer, strip, GAIN, fold),
                                         source, in_height=size >> (i - 1),
                                         rows=band_rows(size >> i, channels, size >> i))
        else:
            out = _encoder_layer(model, layer, out, GAIN, fold)
        features[size >> i] = out
        block_done()
    del out

    smallest = features[4]
    code = _linear_fp32(model, model.final_linear[0], smallest.reshape(smallest.shape[0], -1) * GAIN)
    del smallest
    gen = model.generator
    w = gen.style[0](code)  # PixelNorm
    for layer in gen.style[1:]:
        w = _linear_fp32(model, layer, w)  # [N, style_dim], float32

    n = code.shape[0]
    spans, table_weights, table_biases, alphas = _style_table(model)
    all_styles = torch.addmm(table_biases, w, table_weights.t())  # [N, sum I] float32

    def styles(layer) -> torch.Tensor:
        start, end = spans[id(layer)]
        return all_styles[:, start:end]

    def styled(layer, h, feature, input_gain):
        return _styled_conv(model, layer, h, styles(layer), alphas[id(layer)], feature, input_gain=input_gain,
                            fold_blur=fold, subpixel=subpixel, fused=fused, winograd=plan.winograd)

    h = gen.input.input.expand(n, -1, -1, -1).contiguous(memory_format=memory_format)
    h = styled(gen.conv1, h, features.pop(4), 1.0)
    skip = _to_rgb(gen.to_rgb1, h, styles(gen.to_rgb1), None, input_gain=GAIN, bilinear=bilinear)
    last_plain = bands.first_banded_step if bands is not None else len(gen.to_rgbs)
    for step, to_rgb in enumerate(gen.to_rgbs[:last_plain]):
        feature = features.pop(2 ** (step + 3))  # released after this step
        h = styled(gen.convs[2 * step], h, feature, GAIN)
        block_done()  # between the two convolutions too: at S/8 of a 2048 model each is seconds on a CPU
        h = styled(gen.convs[2 * step + 1], h, feature, GAIN)
        del feature
        skip = _to_rgb(to_rgb, h, styles(to_rgb), skip, input_gain=GAIN, bilinear=bilinear)
        block_done()
    if bands is None:
        return skip

    def decoder_step(step: int) -> DecoderStep:
        resolution = 2 ** (step + 3)
        conv_up, conv, to_rgb = gen.convs[2 * step], gen.convs[2 * step + 1], gen.to_rgbs[step]
        stored = features.get(resolution)
        return DecoderStep(
            resolution=resolution,
            upsample_conv=lambda strip, feature: styled(conv_up, strip, feature, GAIN),
            conv=lambda strip, feature: styled(conv, strip, feature, GAIN),
            to_rgb=lambda strip: _to_rgb(to_rgb, strip, styles(to_rgb), None, input_gain=GAIN, bilinear=bilinear),
            upsample_skip=(upsample2x_bilinear if bilinear
                           else lambda strip: upsample2x(strip, to_rgb.upsample.kernel)),
            feature=recompute_ecd0 if stored is None else (lambda a, b: stored[:, :, a:b]),
        )

    for group in bands.decoder_groups:
        steps = [decoder_step(step) for step in group]
        for step in group:
            features.pop(2 ** (step + 3), None)  # held by the steps' closures until the group is done
        top = steps[-1].resolution
        final = group[-1] == len(gen.to_rgbs) - 1
        kept, skip = decoder_group_in_bands(steps, (h, skip), keep_h=not final,
                                            rows=band_rows(top, 2 * model.config.channels(top), top))
        del steps  # (the strips checked for Cancel: interrupt.py)
        if kept is not None:  # None after the final group, which keeps no h
            h = kept
    return skip
