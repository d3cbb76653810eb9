"""How much memory one inference forward needs, so callers can size batches before they run out.

The activation estimate walks the fast forward (``fast_forward.py``) layer by layer and adds up the tensors alive at
each point: the encoder features still waiting for the decoder, the layer's input, its intermediate results and its
output. The peak over the walk is the estimate, and a batch of N needs N times that (the batched path's scaled input
copies are short-lived and do not raise the peak). It counts activations only; the weights (``model_bytes``) and the
derived weights (below) come on top. ``benchmarks/bench_gpen.py`` prints it beside the measured peak (``act. MB`` /
``est. MB``; the README's table has the figures). The banded forward (``bands.py``, the CPU default from 512 up) is
walked with the same row arithmetic as its code, strip by strip. The walk is cached per configuration (restore sizes
every call's batches from it).

The derived weights (``derived_weight_bytes``) are not described here at all: the fast forward runs on a shape-only
(meta-device) model and what its own builders cached is summed.
"""

from __future__ import annotations

import functools

import torch

from .bands import BandPlan, band_plan, band_rows
from .config import GPENConfig
from .fast_plan import FastPlan

#: Allocator slack (fragmentation, convolution workspaces) on top of the tensors the walk counts.
OVERHEAD = 1.15


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def activation_elements(config: GPENConfig, *, batch_size: int = 1, banded: bool = False) -> int:
    """Peak number of activation elements alive during one fast forward of ``batch_size`` faces; ``banded``: with
    the largest layers in strips (``bands.py``; configurations it has no plan for are walked unbanded)."""
    return _elements_per_face(config, banded) * batch_size


@functools.lru_cache(maxsize=64)
def _elements_per_face(config: GPENConfig, banded: bool) -> int:
    """The walk for one face, kept per configuration: restore sizes every call's batches from it (a few
    milliseconds of Python for the banded walk, which would otherwise land between two GPU forwards)."""
    plan = band_plan(config) if banded else None
    if plan is not None:
        return int(_banded_elements(config, plan))
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
        peak = max(peak, held_features + _plain_step_elements(config, r, h, skip))
        held_features -= features.get(r, 0)
        h = 2 * config.channels(r) * r * r
        skip = 3 * r * r
    return int(peak)


def _plain_step_elements(config: GPENConfig, r: int, h: int, skip: int) -> int:
    """Peak elements of one decoder step at resolution ``r`` run on whole tensors, from an input of ``h`` elements
    and a skip of ``skip`` (the unfolded CPU form, the largest)."""
    c = config.channels(r)
    up = c * (r + 1) ** 2  # transposed-conv output before the blur
    blurred = c * r * r
    cat = 2 * c * r * r
    first = max(h + up + blurred, h + blurred + cat)
    second = cat + blurred + cat
    rgb = 3 * r * r + 3 * r * r + skip  # new skip, upsampled old skip, old skip
    return max(max(first, second) + skip, cat + rgb)


def _banded_elements(config: GPENConfig, plan: BandPlan) -> int:
    """The walk of :func:`activation_elements` for the banded forward: the same row arithmetic as ``bands.py``, the
    tensors alive at each point counted strip by strip."""
    size = config.size
    held = 3 * size * size  # the input (ecd0 is recomputed from it, never stored)
    features: dict[int, int] = {}
    peak = 0
    for i in range(1, config.num_encoder_layers):
        r_in, r_out = size >> (i - 1), size >> i
        c_in, c_out = config.channels(r_in), config.channels(r_out)
        out = c_out * r_out * r_out
        if i in plan.encoder_layers:
            rows = band_rows(r_out, c_out, r_out)
            for m0 in range(0, r_out, rows):
                m1 = min(m0 + rows, r_out)
                e0, e1 = max(2 * m0 - 2, 0), min(2 * m1 + 2, r_in)
                source = c_in * (e1 - e0) * r_in if i == 1 else 0  # ecd0 recomputed; later sources are views
                blurred = c_in * (e1 - e0 + 1) * (r_in + 1)
                strip = c_out * (e1 - e0) // 2 * r_out
                peak = max(peak, held + out + source + blurred + strip)
        else:
            blurred = c_in * (r_in + 1) ** 2
            peak = max(peak, held + blurred + out)
        features[r_out] = out
        held += out

    first_banded = plan.first_banded_step
    h, skip = 2 * config.channels(4) * 16, 3 * 16
    for step in range(first_banded):
        r = 2 ** (step + 3)
        peak = max(peak, held + _plain_step_elements(config, r, h, skip))
        held -= features.pop(r, 0)
        h, skip = 2 * config.channels(r) * r * r, 3 * r * r
    for group in plan.decoder_groups:
        resolutions = [2 ** (step + 3) for step in group]
        top = resolutions[-1]
        final = group[-1] == config.num_decoder_steps - 1
        out = 3 * top * top + (0 if final else 2 * config.channels(top) * top * top)
        rows = band_rows(top, 2 * config.channels(top), top)
        strip_peak = 0
        for y0 in range(0, top, rows):
            strip, _ = _strip_elements(config, resolutions, len(resolutions) - 1, y0, min(y0 + rows, top))
            strip_peak = max(strip_peak, strip)
        peak = max(peak, held + h + skip + out + strip_peak)
        for r in resolutions:
            held -= features.pop(r, 0)
        h, skip = (0 if final else 2 * config.channels(top) * top * top), 3 * top * top
    return peak


def _strip_elements(config: GPENConfig, resolutions: list[int], j: int, a: int, b: int) -> tuple[int, int]:
    """(peak elements, elements of the returned strips) while ``bands._step_rows`` computes rows ``[a, b)`` of the
    step at ``resolutions[j]``; same row arithmetic."""
    r = resolutions[j]
    half, c = r // 2, config.channels(r)
    a0, a1 = max(a - 1, 0), min(b + 1, r)
    i0, i1 = max(a0 // 2 - 1, 0), min((a1 + 1) // 2 + 1, half)
    below_peak, below = _strip_elements(config, resolutions, j - 1, i0, i1) if j > 0 else (0, 0)
    rows, kept, out_rows = 2 * (i1 - i0), a1 - a0, b - a
    feature = c * rows * r if r == config.size else 0  # recomputed from the input; stored features are views
    skip_below = 3 * (i1 - i0) * half
    up, blurred, cat_a = c * (rows + 1) * (r + 1), c * rows * r, 2 * c * rows * r
    upsampling = below + feature + max(up + blurred, blurred + cat_a)
    cat_b = 2 * c * kept * r
    second = skip_below + feature + cat_a + c * kept * r + cat_b
    rgb = skip_below + cat_b + 3 * out_rows * r + 3 * rows * r
    return max(below_peak, upsampling, second, rgb), cat_b + 3 * out_rows * r


def estimate_forward_memory(config: GPENConfig, *, batch_size: int, dtype: torch.dtype,
                            banded: bool = False) -> int:
    """Peak bytes of activations for one inference forward (weights excluded), with allocator slack; ``banded``:
    for the forward that runs the largest layers in strips (``fast_forward(banded=True)``, the CPU default)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    elements = activation_elements(config, batch_size=batch_size, banded=banded)
    return int(elements * _element_size(dtype) * OVERHEAD)


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers as they are stored now."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def derived_weight_bytes(config: GPENConfig, plan: FastPlan, dtype: torch.dtype) -> int:
    """Bytes of the weights the fast forward derives once and keeps (``weight_cache.py``) when it runs ``plan`` for
    a model of ``config`` in ``dtype``: the fast forward itself, run on a shape-only (meta-device) model of that
    configuration, builds them, and their sizes are summed; there is no second description of what it caches.
    Kept per (configuration, plan, dtype)."""
    return _derived_weight_bytes(config, plan.fold_blur, plan.subpixel, dtype)


@functools.lru_cache(maxsize=64)
def _derived_weight_bytes(config: GPENConfig, fold_blur: bool, subpixel: bool, dtype: torch.dtype) -> int:
    from .fast_forward import fast_forward
    from .model import GPEN

    with torch.device("meta"):
        model = GPEN(config).to(dtype)
        x = torch.empty((1, 3, config.size, config.size), dtype=dtype)
    # only the folding decisions change what is derived; strips and kernels change how activations are computed
    fast_forward(model, x, FastPlan(fold_blur=fold_blur, subpixel=subpixel))
    return model.fast_path.derived.nbytes()
