"""How much memory one inference forward needs, so callers can size batches before they run out.

The estimate walks the fast forward (``fast_forward.py``) layer by layer and adds up the tensors alive at each point:
the encoder features still waiting for the decoder, the layer's input, its intermediate results and its output.
The peak over the walk is the estimate, and a batch of N needs N times that (measured: the batched path's scaled
input copies are short-lived and do not raise the peak). It counts activations only; the weights (``model_bytes``)
come on top. ``benchmarks/bench_gpen.py`` prints it beside the measured peak (``act. MB`` / ``est. MB``): on an H100
it came within +5..+12% of ``torch.cuda.max_memory_allocated`` minus the weights for S = 512/1024/2048, batch 1 and 4,
float32 and float16.
"""

from __future__ import annotations

import torch

from .config import GPENConfig

#: Allocator slack (fragmentation, convolution workspaces) on top of the tensors the walk counts.
OVERHEAD = 1.15


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def activation_elements(config: GPENConfig, *, batch_size: int = 1) -> int:
    """Peak number of activation elements alive during one fast forward of ``batch_size`` faces."""
    size = config.size
    peak = 0

    # encoder: the features stay alive until the decoder consumes them
    features: dict[int, int] = {}
    held = 3 * size * size  # the input batch: the caller's, but usually alive throughout
    for i in range(config.num_encoder_layers):
        resolution = size >> i
        channels = config.channels(resolution)
        blurred = config.channels(resolution * 2) * (2 * resolution + 1) ** 2 if i > 0 else 0
        out = channels * resolution * resolution
        peak = max(peak, held + blurred + out)
        features[resolution] = out
        held += out

    held_features = held  # the input and every encoder feature
    c4 = config.channels(4)
    h = 2 * c4 * 16
    skip = 3 * 16
    for step in range(config.num_decoder_steps):
        r = 2 ** (step + 3)
        c = config.channels(r)
        first_in = h
        up = c * (r + 1) ** 2  # transposed-conv output before the blur
        blurred = c * r * r
        cat = 2 * c * r * r
        first = max(first_in + up + blurred, first_in + blurred + cat)
        second = cat + blurred + cat
        rgb = 3 * r * r + 3 * r * r + skip  # new skip, upsampled old skip, old skip
        peak = max(peak, held_features + max(first, second) + skip, held_features + cat + rgb)
        held_features -= features[r] if r in features else 0
        h = cat
        skip = 3 * r * r
    return int(peak * batch_size)


def estimate_forward_memory(config: GPENConfig, *, batch_size: int, dtype: torch.dtype) -> int:
    """Peak bytes of activations for one inference forward (weights excluded), with allocator slack."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return int(activation_elements(config, batch_size=batch_size) * _element_size(dtype) * OVERHEAD)


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers as they are stored now."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def derived_weight_bytes(config: GPENConfig, dtype: torch.dtype, *, folded: bool = False, encoder: bool = True) -> int:
    """Bytes of the weights the fast forward derives once and keeps (``weight_cache.py``).

    Always, in float32: the mapping network's and final linear's scaled weights and biases, the stacked modulation
    weights and biases of every StyledConv and ToRGB with the feature gains, and every StyledConv's demodulation
    norms ``[O, I]``. With ``folded``, in ``dtype``: every upsampling convolution's 3x3 weight folded to 6x6 (or its
    four 3x3 phases: as many numbers), and with ``encoder`` every downsampling encoder convolution folded likewise.
    """
    f32 = 4
    dim = config.style_dim
    c4 = config.channels(4)
    total = config.n_mlp * (dim * dim + dim) * f32 + (c4 * 16 * dim + dim) * f32  # mapping + final linear
    modulation_inputs = c4 + 2 * c4  # conv1, to_rgb1
    styled = [(c4, c4)]  # (out, in) of every StyledConv
    previous = c4
    for step in range(config.num_decoder_steps):
        channels = config.channels(2 ** (step + 3))
        styled += [(channels, 2 * previous), (channels, 2 * channels)]
        modulation_inputs += 2 * previous + 2 * channels + 2 * channels  # two StyledConvs and a ToRGB
        previous = channels
    total += modulation_inputs * (dim + 1) * f32 + len(styled) * f32  # style table, feature gains
    total += sum(out_ch * in_ch for out_ch, in_ch in styled) * f32  # demodulation norms
    if folded:
        element = _element_size(dtype)
        total += sum(out_ch * in_ch for out_ch, in_ch in styled[1::2]) * 36 * element  # the upsampling convs
        if encoder:
            for i in range(1, config.num_encoder_layers):
                resolution = config.size >> i
                total += config.channels(resolution) * config.channels(2 * resolution) * 36 * element
    return total
