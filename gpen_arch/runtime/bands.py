"""Running GPEN's largest layers band by band (horizontal strips of rows), so that their activations never exist
in full: the low-memory form of the fast forward (``fast_forward.py``), with the same results.

Where the memory goes: at 2048 the last decoder step holds its input (64 channels at 1024), its concatenation
buffers (32 channels at 2048, twice) and the 2048 encoder feature at once, about 1.7 GB in float32, while every
layer above 512 is a 3x3 convolution that needs only a few neighbouring rows. Here:

- the full-resolution encoder feature (``ecd0``, a 1x1 convolution of the input) is never stored: each band
  recomputes its rows from the input, the same arithmetic on the same numbers;
- the next encoder layers (``ecd1``, ``ecd2``) are computed band by band into their outputs, so the blurred copy
  of their input never exists in full;
- the decoder's last steps run as groups (:data:`DECODER_GROUPS`): a group computes its output strip by strip, and
  within a strip each step computes exactly the rows the next one needs from the step below (recursively), so
  the intermediate steps of a group are never stored at all (at 2048: the 1024 step's 64-channel output).

Exact halos: each strip is computed from an input strip wide enough that every row kept was computed from the
same inputs as in the full-image forward; rows near a strip's edge, where the convolutions' zero padding stands
in for the neighbouring strip, are computed and thrown away. Derivations (rows ``[a, b)`` of an output):

- upsampling StyledConv (stride-2 transposed 3x3 conv then the 4-tap blur, or their folded / sub-pixel forms): an
  input strip ``[i0, i1)`` gives output rows ``[2 i0, 2 i1)``, exact inside ``[2 i0 + 2, 2 i1 - 2)`` (and up to the
  image's own edge where the strip touches it);
- 3x3 StyledConv (padding 1): exact inside ``[a0 + 1, a1 - 1)`` of the strip ``[a0, a1)``;
- ToRGB's skip upsampling (4-tap, up 2): from ``[i0, i1)``, exact inside ``[2 i0 + 1, 2 i1 - 1)``;
- downsampling encoder layer (4-tap blur with pads 2, then a stride-2 3x3 conv; or the folded 6x6 form): input
  rows ``[e0, e1)`` (``e0`` even) give output rows ``[e0 / 2, e1 / 2)``, exact inside ``[e0 / 2 + 1, e1 / 2 - 1)``.

Shapes: all tensors here are ``[N, C, rows, W]`` strips of ``[N, C, H, W]`` activations (channels-last or not, as
the fast forward keeps them); activations carry the fast path's ``1 / sqrt(2)`` convention.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..config import GPENConfig
from ..interrupt import block_done
from ..ops.epilogue import memory_format_of

#: Elements (per face) of one strip of a group's top step's concatenation buffer, which sets the strip height: at
#: 2048 that is 64 rows of 2048 x 32 channels (16 MB in float32). Each strip recomputes a few halo rows, more in
#: the two fused steps: with 32-row strips the 1024 step's upsampling convolution read 14 input rows per 8 kept.
#: 64 rows halve that overhead for about 25 MB more peak RSS (1818 against 1793 MB at 2048); 128 rows saved no
#: measurable time more and cost 110 MB (1901 MB). The README's benchmark table and ``benchmarks/bench_gpen.py
#: --plain`` give the figures.
BAND_ELEMENTS = 1 << 22

#: Smallest strip height: below it the halo rows would cost more than the strip itself.
MIN_BAND_ROWS = 8

#: Smallest model the banded plan is for; below it activations are small and strips would be a handful of rows.
MIN_SIZE = 64

#: Rows ``[a, b)`` of a tensor (or of a tensor computed on demand): ``source(a, b)`` -> ``[N, C, b - a, W]``.
RowSource = Callable[[int, int], torch.Tensor]


@dataclass(frozen=True)
class BandPlan:
    """Which layers run band by band, for one configuration (see the module doc).

    ``encoder_layers``: the downsampling encoder layers (1-based ``ecd`` indices) computed in strips; ``ecd0`` is
    then recomputed wherever it is read instead of being stored. ``decoder_groups``: decoder steps (0-based, the
    step at resolution ``2 ** (step + 3)``) run in strips, one tuple per group of consecutive steps; only a group's
    last step is stored.
    """

    encoder_layers: tuple[int, ...]
    decoder_groups: tuple[tuple[int, ...], ...]

    @property
    def first_banded_step(self) -> int:
        return self.decoder_groups[0][0]


def band_plan(config: GPENConfig) -> BandPlan | None:
    """The plan for ``config``: the three largest resolutions S/4, S/2 and S in strips, S/2 and S as one group
    (at S/2 the output is the largest tensor of the decoder and is never stored); None below :data:`MIN_SIZE`."""
    if config.size < MIN_SIZE:
        return None
    last = config.num_decoder_steps - 1
    return BandPlan(encoder_layers=(1, 2), decoder_groups=((last - 2,), (last - 1, last)))


def uses_bands(config: GPENConfig, device: torch.device | str) -> bool:
    """Whether the fast forward on ``device`` runs the largest layers in strips by default: on the CPU for models
    of 512 and up (the same results with about a third of the activation memory, and no slower there); elsewhere
    not, since on a GPU the strips multiply the kernel launches that already bound batch-1 time."""
    return torch.device(device).type == "cpu" and config.size >= 512 and band_plan(config) is not None


def band_rows(height: int, channels: int, width: int) -> int:
    """Strip height for a ``channels`` x ``width`` tensor of ``height`` rows: about :data:`BAND_ELEMENTS` elements,
    even, at least :data:`MIN_BAND_ROWS`, at most the height."""
    rows = max(MIN_BAND_ROWS, BAND_ELEMENTS // max(channels * width, 1))
    return min(height, rows + rows % 2)


def encoder_layer_in_bands(encode: Callable[[torch.Tensor], torch.Tensor], source: RowSource, *, in_height: int,
                           rows: int) -> torch.Tensor:
    """A downsampling encoder layer ``encode`` (``[N, I, h, W]`` -> ``[N, O, h / 2, W / 2]``) applied to the
    ``in_height``-row input that ``source`` yields strip by strip; returns the whole ``[N, O, in_height / 2, W / 2]``
    output, computed ``rows`` output rows at a time."""
    out_height = in_height // 2
    out: torch.Tensor | None = None
    for m0 in range(0, out_height, rows):
        m1 = min(m0 + rows, out_height)
        e0, e1 = max(2 * m0 - 2, 0), min(2 * m1 + 2, in_height)  # e0 even: strip row 0 is output row e0 / 2
        strip = encode(source(e0, e1))  # [N, O, (e1 - e0) / 2, W / 2]
        if out is None:
            out = torch.empty((strip.shape[0], strip.shape[1], out_height, strip.shape[3]), dtype=strip.dtype,
                              device=strip.device, memory_format=memory_format_of(strip))
        out[:, :, m0:m1] = strip[:, :, m0 - e0 // 2:m1 - e0 // 2]
        del strip
        block_done()  # Cancel between strips (interrupt.py)
    if out is None:
        raise ValueError(f"encoder_layer_in_bands needs an input of at least 2 rows, got in_height={in_height}")
    return out


@dataclass(frozen=True)
class DecoderStep:
    """One decoder step of the fast forward, as callables on strips.

    ``upsample_conv(h, feature)``: the upsampling StyledConv, ``[N, 2 C', i, W/2]`` -> ``[N, 2 C, 2 i, W]``;
    ``conv(h, feature)``: the 3x3 StyledConv, ``[N, 2 C, a, W]`` -> ``[N, 2 C, a, W]``; ``to_rgb(h)``: ToRGB without
    its skip, ``[N, 2 C, a, W]`` -> ``[N, 3, a, W]``; ``upsample_skip(skip)``: ``[N, 3, i, W/2]`` -> ``[N, 3, 2 i, W]``;
    ``feature(a, b)``: rows ``[a, b)`` of the encoder feature at this resolution ``[N, C, b - a, W]``.
    """

    resolution: int
    upsample_conv: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    conv: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    to_rgb: Callable[[torch.Tensor], torch.Tensor]
    upsample_skip: Callable[[torch.Tensor], torch.Tensor]
    feature: RowSource


def _step_rows(steps: Sequence[DecoderStep], j: int, a: int, b: int, below: tuple[torch.Tensor, torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``[a, b)`` of step ``steps[j]``'s output ``h`` ``[N, 2 C, b - a, W]`` and skip ``[N, 3, b - a, W]``,
    exactly as the full-image forward computes them; ``below`` holds the full ``(h, skip)`` under ``steps[0]``."""
    step = steps[j]
    full, half = step.resolution, step.resolution // 2
    a0, a1 = max(a - 1, 0), min(b + 1, full)  # rows of the upsampling conv's output the 3x3 conv needs
    i0, i1 = max(a0 // 2 - 1, 0), min((a1 + 1) // 2 + 1, half)  # input rows they need: output rows [2 i0, 2 i1)
    if j == 0:
        h_below, skip_below = below[0][:, :, i0:i1], below[1][:, :, i0:i1]
    else:
        h_below, skip_below = _step_rows(steps, j - 1, i0, i1, below)
    feature = step.feature(2 * i0, 2 * i1)
    h = step.upsample_conv(h_below, feature)[:, :, a0 - 2 * i0:a1 - 2 * i0]  # rows [a0, a1)
    del h_below
    h = step.conv(h, feature[:, :, a0 - 2 * i0:a1 - 2 * i0])[:, :, a - a0:b - a0]  # rows [a, b)
    del feature
    skip = step.to_rgb(h).add_(step.upsample_skip(skip_below)[:, :, a - 2 * i0:b - 2 * i0])
    return h, skip


def decoder_group_in_bands(steps: Sequence[DecoderStep], below: tuple[torch.Tensor, torch.Tensor], *,
                           keep_h: bool, rows: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Run consecutive decoder ``steps`` strip by strip (``rows`` output rows at a time) from ``below`` (the full
    ``(h, skip)`` of the step under them). Returns the last step's full ``h`` (None unless ``keep_h``) and skip."""
    height = steps[-1].resolution
    out_h: torch.Tensor | None = None
    out_skip: torch.Tensor | None = None
    for y0 in range(0, height, rows):
        y1 = min(y0 + rows, height)
        h, skip = _step_rows(steps, len(steps) - 1, y0, y1, below)
        if out_skip is None:
            out_skip = torch.empty((skip.shape[0], 3, height, skip.shape[3]), dtype=skip.dtype, device=skip.device,
                                   memory_format=memory_format_of(skip))
            if keep_h:
                out_h = torch.empty((h.shape[0], h.shape[1], height, h.shape[3]), dtype=h.dtype, device=h.device,
                                    memory_format=memory_format_of(h))
        out_skip[:, :, y0:y1] = skip
        if out_h is not None:  # allocated above exactly when keep_h
            out_h[:, :, y0:y1] = h
        del h, skip
        block_done()  # Cancel between strips (interrupt.py)
    if out_skip is None:
        raise ValueError(f"decoder_group_in_bands needs steps of at least 1 row, got a height of {height}")
    return out_h, out_skip
