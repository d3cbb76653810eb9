"""A 3x3 convolution (stride 1, padding 1) by Winograd's minimal filtering F(4x4, 3x3): the CPU form of GPEN's
large 3x3 decoder convolutions, with a quarter of a direct convolution's multiplications.

Maths (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): each 4x4 block of outputs of one
(output, input) channel pair is ``A^T [(G g G^T) * (B^T d B)] A``, where ``g`` is the 3x3 filter, ``d`` the 6x6 input
tile that covers the block with its halo, ``*`` the elementwise product, and ``A`` (6x4), ``B`` (6x6), ``G`` (6x3) the
transform matrices of the interpolation points 0, 1, -1, 2, -2 and infinity. Summed over input channels, each of the
36 positions of the transformed tile becomes one matrix product ``U[xi] @ V[xi]`` of ``[O, I]`` by ``[I, tiles]``:
36 multiplications per 16 outputs instead of 144. The transforms are additions and small constant multiples, run
over a chunk of tile rows at a time, and Cancel is checked between chunks (``interrupt.block_done``: the largest
convolutions of a GPEN-2048 decoder take seconds on a CPU; a chunk, at most a few hundred ms), which changes nothing
computed.

Accuracy in float32: the same order as a direct float32 convolution's (about 5e-5 absolute on unit-variance outputs
of 9216-term sums; tests hold it against float64).

When it pays: the products run at BLAS speed and scale with threads; the transforms are memory passes and scale
less. So the form wins where the product work, which grows as ``I * O``, dominates the transforms', which grow as
``I + O``: about 2.4x (one thread) and 2.2x (two) at 512 -> 256 channels on 128 x 128, 1.8x and 1.4x at 256 -> 128;
at 128 -> 64 it gained 1.4x on one thread but nothing on two, and would lose on more, so it is left to the direct
convolution, as are tiny maps, where the filter transform costs more than it saves (:func:`worthwhile`;
docs/performance.md has the table). ``benchmarks/bench_gpen.py --winograd on|off`` compares the whole forward.
"""

from __future__ import annotations

import torch

from ..interrupt import block_done

#: ``G`` (6x3): the filter transform.
_G = ((1 / 4, 0.0, 0.0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
      (1 / 24, -1 / 12, 1 / 6), (0.0, 0.0, 1.0))

#: Bytes of transformed input (``V``) per chunk of tile rows: larger chunks mean fewer, longer elementwise passes;
#: measured flat from 8 to 32 MB, slower below.
CHUNK_BYTES = 8 << 20

#: Smallest layer the form is used for (see :func:`worthwhile`).
MIN_IN_CHANNELS = 256
MIN_OUT_CHANNELS = 128
MIN_PIXELS = 32 * 32


def worthwhile(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`winograd_conv3x3` beats a direct convolution for input ``x`` ``[N, I, H, W]`` and ``weight``
    ``[O, I, 3, 3]`` (measured on one and two CPU threads; see the module doc)."""
    out_ch, in_ch, kh, kw = weight.shape
    return ((kh, kw) == (3, 3) and in_ch >= MIN_IN_CHANNELS and out_ch >= MIN_OUT_CHANNELS
            and x.shape[-2] * x.shape[-1] >= MIN_PIXELS)


def filter_transform(weight: torch.Tensor) -> torch.Tensor:
    """``G g G^T`` for every filter: ``[O, I, 3, 3]`` -> ``[36, O, I]`` (position ``6 a + b`` of the 6x6 tile), in
    the weight's dtype (computed in float32 at least). A weight stored taps-major (a ``[3, 3, O, I]`` tensor viewed
    as ``[O, I, 3, 3]``) is read without a copy."""
    out_ch, in_ch = weight.shape[:2]
    compute = torch.promote_types(weight.dtype, torch.float32)
    g = torch.tensor(_G, dtype=compute, device=weight.device)
    taps = weight.to(compute).permute(2, 3, 0, 1).reshape(9, out_ch * in_ch)  # [9, O*I]
    return (torch.kron(g, g) @ taps).reshape(36, out_ch, in_ch).to(weight.dtype)


def _input_rows(d: list[torch.Tensor], out: list[torch.Tensor]) -> None:
    """``B^T d`` along one axis: six views ``d`` (the tile's samples 0..5) -> six destinations ``out``."""
    d0, d1, d2, d3, d4, d5 = d
    torch.add(d4, d2, alpha=-5, out=out[0]).add_(d0, alpha=4)  # 4 d0 - 5 d2 + d4
    p, q = torch.add(d4, d2, alpha=-4), torch.add(d3, d1, alpha=-4)
    torch.add(p, q, out=out[1])  # -4 d1 - 4 d2 + d3 + d4
    torch.sub(p, q, out=out[2])  # 4 d1 - 4 d2 - d3 + d4
    u, v = torch.sub(d4, d2), torch.sub(d3, d1)
    torch.add(u, v, alpha=2, out=out[3])  # -2 d1 - d2 + 2 d3 + d4
    torch.add(u, v, alpha=-2, out=out[4])  # 2 d1 - d2 - 2 d3 + d4
    torch.add(d5, d3, alpha=-5, out=out[5]).add_(d1, alpha=4)  # 4 d1 - 5 d3 + d5


def _output_rows(m: list[torch.Tensor], out: list[torch.Tensor]) -> None:
    """``A^T m`` along one axis: six views ``m`` -> four destinations ``out``."""
    m0, m1, m2, m3, m4, m5 = m
    a, b, c, d = m1 + m2, m1 - m2, m3 + m4, m3 - m4
    torch.add(a, c, out=out[0]).add_(m0)  # m0 + m1 + m2 + m3 + m4
    torch.add(b, d, alpha=2, out=out[1])  # m1 - m2 + 2 (m3 - m4)
    torch.add(a, c, alpha=4, out=out[2])  # m1 + m2 + 4 (m3 + m4)
    torch.add(b, d, alpha=8, out=out[3]).add_(m5)  # m1 - m2 + 8 (m3 - m4) + m5


def winograd_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                     chunk_bytes: int | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` by F(4x4, 3x3).

    ``x``: ``[N, I, H, W]``, contiguous or channels-last; ``weight``: ``[O, I, 3, 3]``; ``bias``: ``[O]`` or None;
    ``chunk_bytes``: transformed input per chunk of tile rows (None: :data:`CHUNK_BYTES`), Cancel checked after each.
    Returns ``[N, O, H, W]`` in ``x``'s dtype and memory format. Each layout is transformed as it lies (no
    transposing copies): channels-first as ``U [O, I] @ V [I, tiles]``, channels-last as ``V [tiles, I] @ U^T``.
    """
    n, in_ch, height, width = x.shape
    out_ch = weight.shape[0]
    if weight.shape[1:] != (in_ch, 3, 3):
        raise ValueError(f"winograd_conv3x3 wants a [O, {in_ch}, 3, 3] weight, got {list(weight.shape)}")
    rows, cols = -(-height // 4), -(-width // 4)  # tiles
    u = filter_transform(weight.to(x.dtype))  # [36, O, I]
    last = in_ch > 1 and x.is_contiguous(memory_format=torch.channels_last)
    layout = torch.channels_last if last else torch.contiguous_format
    padded = torch.empty((n, in_ch, 4 * rows + 2, 4 * cols + 2), dtype=x.dtype, device=x.device,
                         memory_format=layout).zero_()
    padded[:, :, 1:height + 1, 1:width + 1] = x
    out = torch.empty((n, out_ch, 4 * rows, 4 * cols), dtype=x.dtype, device=x.device, memory_format=layout)
    # one image's "plane", contiguous: [C, H, W] channels-first, [H, W, C] channels-last
    if last:
        padded, planes = padded.permute(0, 2, 3, 1), out.permute(0, 2, 3, 1)
        row_dim, col_dim = 0, 1

        def grid(k: int, width: int, channels: int) -> tuple[int, int, int]:
            return k, width, channels
    else:
        planes = out
        row_dim, col_dim = 1, 2

        def grid(k: int, width: int, channels: int) -> tuple[int, int, int]:
            return channels, k, width
    # [N, O, rows, 4, cols, 4] channels-first, [N, rows, 4, cols, 4, O] channels-last: views of ``out``
    blocks = planes.unflatten(row_dim + 1, (rows, 4)).unflatten(col_dim + 2, (cols, 4))

    def block(i: int, r0: int, k: int, r: int, c: int) -> torch.Tensor:  # pixel (r, c) of tiles r0..r0+k-1
        return blocks[i, r0:r0 + k, r, :, c] if last else blocks[i, :, r0:r0 + k, r, :, c]

    chunk_bytes = CHUNK_BYTES if chunk_bytes is None else chunk_bytes  # read at call time (tests lower it)
    step = max(1, min(rows, chunk_bytes // (36 * in_ch * cols * x.element_size())))
    for i in range(n):
        for r0 in range(0, rows, step):
            k = min(step, rows - r0)
            strip = padded[i].narrow(row_dim, 4 * r0, 4 * k + 2)
            across = x.new_empty((6,) + grid(k, 4 * cols + 2, in_ch))  # B^T d, along the rows of each tile
            _input_rows([_every_4th(strip, row_dim, b, k) for b in range(6)], list(across))
            v = x.new_empty((6, 6) + grid(k, cols, in_ch))  # B^T d B
            for a in range(6):
                _input_rows([_every_4th(across[a], col_dim, b, cols) for b in range(6)], list(v[a]))
            del across
            if last:  # [36, tiles, I] @ [36, I, O]
                m = torch.bmm(v.view(36, k * cols, in_ch), u.transpose(1, 2))
            else:  # [36, O, I] @ [36, I, tiles]
                m = torch.bmm(u, v.view(36, in_ch, k * cols))
            del v
            m = m.view((6, 6) + grid(k, cols, out_ch))
            half = x.new_empty((4, 6) + grid(k, cols, out_ch))  # A^T m, along the rows
            _output_rows(list(m), list(half))
            del m
            for r in range(4):
                _output_rows(list(half[r]), [block(i, r0, k, r, c) for c in range(4)])
            del half
            block_done()  # Cancel between chunks (interrupt.py): at S/32 of a 2048 model the whole conv is seconds
    if bias is not None:
        out.add_(bias.to(out.dtype).reshape(1, out_ch, 1, 1))
    if (4 * rows, 4 * cols) != (height, width):
        out = out[:, :, :height, :width].contiguous(memory_format=layout)
    return out


def _every_4th(t: torch.Tensor, dim: int, start: int, count: int) -> torch.Tensor:
    """``t``'s entries ``start, start + 4, ...`` (``count`` of them) along ``dim``: a view."""
    index = [slice(None)] * t.dim()
    index[dim] = slice(start, start + 4 * count, 4)
    return t[tuple(index)]
