"""StyleGAN2's modulated convolution, in a reference form and a fast form.

Maths (docs/network.md, building blocks): ``W' = (scale * W) * s`` with ``s`` the per-sample style of the input
channels, ``W'' = W' * rsqrt(sum_{in,kh,kw} W'^2 + 1e-8)`` when demodulating, then a convolution with ``W''`` (padding
``k // 2``) or, when upsampling, a stride-2 transposed convolution with ``W''`` followed by the gain-4 blur with pads
(1, 1).

Shapes: ``x`` ``[N, I, H, W]``; ``weight`` ``[1, O, I, k, k]``; ``styles`` ``[N, I]``. Output ``[N, O, H, W]``
(``[N, O, 2H, 2W]`` when upsampling).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .epilogue import ConvOutput, materialize
from .upfirdn2d import blur, fold_blur_into_transposed_conv, transposed_to_subpixel, upfirdn2d_ref
from .winograd import winograd_conv3x3, worthwhile

DEMOD_EPS = 1e-8


def modulated_conv2d_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    scale: float,
    demodulate: bool,
    upsample: bool,
    blur_kernel: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference form: one grouped convolution with a weight per sample (the official order of operations)."""
    n, in_ch, height, width = x.shape
    _, out_ch, _, k, _ = weight.shape
    w = scale * weight * styles.reshape(n, 1, in_ch, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        demod = torch.rsqrt(w.pow(2).sum([2, 3, 4]) + DEMOD_EPS)  # [N, O]
        w = w * demod.reshape(n, out_ch, 1, 1, 1)
    x = x.reshape(1, n * in_ch, height, width)  # samples folded into channels
    if upsample:
        w = w.transpose(1, 2).reshape(n * in_ch, out_ch, k, k)  # conv_transpose wants [in, out/groups, k, k]
        out = F.conv_transpose2d(x, w, stride=2, padding=0, groups=n)
        out = out.reshape(n, out_ch, out.shape[-2], out.shape[-1])  # [N, O, 2H+1, 2W+1]
        return upfirdn2d_ref(out, _required(blur_kernel), pad=(1, 1))  # [N, O, 2H, 2W]
    w = w.reshape(n * out_ch, in_ch, k, k)
    out = F.conv2d(x, w, padding=k // 2, groups=n)
    return out.reshape(n, out_ch, height, width)


#: ``cache(form, build)`` returns ``build()``, or the tensor an earlier call built for the same layer and form.
Memo = Callable[[str, Callable[[], torch.Tensor]], torch.Tensor]


def _no_cache(form: str, build: Callable[[], torch.Tensor]) -> torch.Tensor:
    return build()


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, **options) -> torch.Tensor:
    """Fast form of :func:`modulated_conv2d_ref`, plus an optional output ``bias`` ``[O]`` and an ``input_gain``
    (the caller passes ``x / input_gain``; the gain is folded into the weights, saving a pass over ``x``).
    Takes the keyword options of :func:`modulated_conv2d_raw` and settles its epilogue into a plain tensor."""
    return materialize(modulated_conv2d_raw(x, weight, styles, **options))


def modulated_conv2d_raw(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    scale: float,
    demodulate: bool,
    upsample: bool,
    blur_kernel: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    input_gain: float = 1.0,
    fold_blur: bool = False,
    subpixel: bool = False,
    winograd: bool = False,
    cache: Memo | None = None,
) -> ConvOutput:
    """The convolution of :func:`modulated_conv2d`, its cheap elementwise remainder left to the caller
    (``ops/epilogue.py``), so that it can be fused into whatever writes the result.

    - batch 1: the modulated weight is built once per call and applied with a plain convolution, bias included;
    - batch > 1: modulation scales the input and demodulation scales the output, so the whole batch shares one
      weight and one ordinary convolution (no per-sample grouped weights); scale and bias are left pending.
    Upsampling is a stride-2 transposed convolution followed by the blur as a depthwise convolution; with
    ``fold_blur`` the blur is folded into the transposed convolution's weight (``fold_blur_into_transposed_conv``);
    with ``subpixel`` that folded convolution runs as a 3x3 convolution with four phases at the input resolution
    (``transposed_to_subpixel``), its pixel shuffle left pending. With ``winograd``, 3x3 convolutions large enough
    to gain run by Winograd's F(4x4, 3x3) (``winograd.py``; the CPU form). Folded weights depend on the parameters
    only: ``cache`` (see :data:`Memo`) keeps them between calls, and modulation and demodulation are applied to them
    as per-(output, input) factors, since folding is linear in each filter.
    """
    n, in_ch = x.shape[:2]
    _, out_ch, _, k, _ = weight.shape
    if upsample and subpixel and k != 3:
        raise ValueError(f"sub-pixel upsampling needs a 3x3 kernel, got {k}x{k}")
    memo = cache or _no_cache
    s = styles.float()  # [N, I]
    norms = memo("norms", lambda: (weight[0].float() * scale).pow(2).sum([2, 3])) if demodulate else None
    if upsample and (fold_blur or subpixel):
        out_scale = _output_scale(s, norms, input_gain, out_ch)  # [N, O] float32, input gain included
        return _folded_upsample(x, weight, s, out_scale, scale=scale, blur_kernel=_required(blur_kernel), bias=bias,
                                subpixel=subpixel, memo=memo)
    if n == 1:  # one weight: the parameter times per-(output, input) factors, computed in float32
        if demodulate:
            out_scale = _output_scale(s, norms, input_gain, out_ch)  # [N, O] float32, input gain included
            factors = out_scale[0].reshape(out_ch, 1) * (s[0] * scale).reshape(1, in_ch)
        else:  # the same factor for every output channel (a single input-gain factor)
            factors = (s[0] * (scale * input_gain)).reshape(1, in_ch)
        out = _convolve(x, weight[0], factors, bias, upsample=upsample, blur_kernel=blur_kernel, winograd=winograd)
        return ConvOutput(out, out_ch)
    # one shared weight: modulation as input scaling, demodulation as output scaling (left pending, with the bias)
    out_scale = _output_scale(s, norms, input_gain, out_ch)  # [N, O] float32, input gain included
    out = _convolve(x * s.to(x.dtype).reshape(n, in_ch, 1, 1), weight[0], s.new_full((1, in_ch), scale), None,
                    upsample=upsample, blur_kernel=blur_kernel, winograd=winograd)
    return ConvOutput(out, out_ch, scale=out_scale.to(x.dtype), bias=bias)


def _convolve(x: torch.Tensor, weight: torch.Tensor, factors: torch.Tensor, bias: torch.Tensor | None, *,
              upsample: bool, blur_kernel: torch.Tensor | None, winograd: bool) -> torch.Tensor:
    """``x`` ``[N, I, H, W]`` convolved with ``weight * factors`` (``[O, I, k, k]`` times ``[O or 1, I]`` float32)
    plus ``bias``: the stride-2 transposed convolution and the blur (``[N, O, 2H, 2W]``), or the stride-1 one with
    ``padding = k // 2`` (``[N, O, H, W]``), by Winograd where ``winograd`` asks and it pays. Each weight is built in
    one pass in the layout its convolution reads: ``[I, O, k, k]`` transposed, taps-major ``[k, k, O, I]`` for
    Winograd's filter transform."""
    factors = factors.reshape(-1, weight.shape[1], 1, 1)
    if upsample:
        w = _product(weight.transpose(0, 1), factors.transpose(0, 1), x.dtype)
        out = F.conv_transpose2d(x, w, stride=2)  # [N, O, 2H+1, 2W+1]
        del x  # the caller's input may be a temporary (the batch path's scaled copy): gone before the blur
        # per-channel scaling commutes with the depthwise blur
        return blur(out, _required(blur_kernel), pad=1, bias=bias)
    if winograd and worthwhile(x, weight):
        w = _product(weight.permute(2, 3, 0, 1), factors.permute(2, 3, 0, 1), x.dtype)
        return winograd_conv3x3(x, w.permute(2, 3, 0, 1), bias)
    return F.conv2d(x, torch.mul(weight, factors).to(x.dtype), bias, padding=weight.shape[-1] // 2)


def _required(blur_kernel: torch.Tensor | None) -> torch.Tensor:
    """The blur kernel an upsampling convolution needs (``[4, 4]``); ValueError when the caller gave none."""
    if blur_kernel is None:
        raise ValueError("an upsampling modulated convolution needs blur_kernel (the layer's [4, 4] FIR kernel), "
                         "got None; pass the ModulatedConv2d's blur.kernel")
    return blur_kernel


def _product(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``a * b`` (``b`` broadcast) as a new contiguous tensor of ``a``'s shape, whatever ``a``'s strides, in
    ``dtype``: a weight built directly in the layout its consumer reads, instead of a product and a copy."""
    out = torch.empty(a.shape, dtype=torch.promote_types(a.dtype, b.dtype), device=a.device)
    return torch.mul(a, b, out=out).to(dtype)


def _output_scale(s: torch.Tensor, norms: torch.Tensor | None, input_gain: float, out_ch: int) -> torch.Tensor:
    """``[N, O]`` float32: demodulation ``rsqrt(sum_i s_i^2 |scale W_oi|^2 + eps)`` (``norms`` = ``|scale W_oi|^2``
    ``[O, I]``; None: no demodulation) times the input gain."""
    if norms is None:
        return torch.full((s.shape[0], out_ch), input_gain, device=s.device)
    return torch.rsqrt(torch.square(s) @ norms.t() + DEMOD_EPS).mul_(input_gain)


def _folded_upsample(
    x: torch.Tensor, weight: torch.Tensor, s: torch.Tensor, out_scale: torch.Tensor, *, scale: float,
    blur_kernel: torch.Tensor, bias: torch.Tensor | None, subpixel: bool, memo: Memo,
) -> ConvOutput:
    """Upsampling modulated conv with the blur folded in: a 6x6 stride-2 transposed conv, or its four 3x3 phases."""
    n, in_ch = x.shape[:2]
    out_ch = weight.shape[1]

    def folded_base() -> torch.Tensor:  # [O, I, 6, 6] float32
        return fold_blur_into_transposed_conv(weight[0].float() * scale, blur_kernel.float())

    if subpixel:  # [4*O, I, 3, 3] in the model's dtype
        base = memo("subpixel", lambda: transposed_to_subpixel(folded_base()).to(x.dtype))
    else:  # [I, O, 6, 6], as conv_transpose2d wants it
        base = memo("transposed", lambda: folded_base().transpose(0, 1).contiguous().to(x.dtype))

    def convolve(inputs: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        if subpixel:
            phase_bias = None if b is None else b.to(x.dtype).repeat(4)
            return F.conv2d(inputs, w, phase_bias, padding=1)
        return F.conv_transpose2d(inputs, w, b, stride=2, padding=2)

    if n == 1:  # modulation and demodulation as per-(output, input) factors on the cached folded weight
        factors = out_scale[0].reshape(out_ch, 1) * s[0].reshape(1, in_ch)  # [O, I] float32
        if subpixel:
            w = torch.mul(base.reshape(4, out_ch, in_ch, 3, 3), factors.reshape(1, out_ch, in_ch, 1, 1))
        else:
            w = torch.mul(base, factors.t().reshape(in_ch, out_ch, 1, 1))
        return ConvOutput(convolve(x, w.to(x.dtype).reshape(base.shape), bias), out_ch, subpixel=subpixel)
    xs = x * s.to(x.dtype).reshape(n, in_ch, 1, 1)
    out = convolve(xs, base, None)
    return ConvOutput(out, out_ch, subpixel=subpixel, scale=out_scale.to(x.dtype), bias=bias)
