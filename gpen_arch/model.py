"""GPEN: the FullGenerator of GPEN-BFR (a U-Net encoder feeding a StyleGAN2 decoder)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .bands import uses_bands
from .config import GPENConfig
from .generator import Generator
from .layers import ConvLayer, EqualLinear
from .memory import derived_weight_bytes, estimate_forward_memory
from .weight_cache import DerivedWeights


def _auto(setting: bool | None, device: torch.device | str) -> bool:
    """A GPU option's value on ``device``: as set, or when None (auto) on CUDA only."""
    return bool(setting) if setting is not None else torch.device(device).type == "cuda"


@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool):
    """``torch.backends.cudnn.benchmark = enabled`` for the block, then the caller's setting again."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


class GPEN(nn.Module):
    """GPEN FullGenerator.

    ``forward(x)``: ``x`` is ``[N, 3, S, S]`` RGB in [-1, 1] (float32, float16 or bfloat16, the model's dtype);
    returns the raw restored image ``[N, 3, S, S]`` in the input's dtype, nominally in [-1, 1] but **not clamped**.
    A wrong shape or dtype, or NaN/inf in ``x``, raises ``ValueError``.

    Attribute names reproduce the released keys: ``generator.*``, then ``ecd0 .. ecd{L-2}``, then ``final_linear``.
    ``use_fast_path`` (default True) selects the optimised inference forward (``fast_forward.py``); False runs the
    literal reference forward built from the layers' own ``forward`` methods. ``channels_last`` (default True) runs
    the fast path's activations in channels-last memory format (2x faster on CPUs). ``fold_blur`` (default None =
    on CUDA only) folds the FIR blurs into the neighbouring stride-2 convolutions (see ``ops/upfirdn2d.py``).
    ``cuda_graphs`` (default False) replays CUDA forwards through a captured CUDA graph (``cuda_graph.py``): much
    faster at batch 1, at the price of keeping one forward's activations allocated while the model lives.
    ``subpixel_upsample`` (default None = wherever blurs are folded) runs the upsampling convolutions, blur folded
    in, as 3x3 convolutions with four output phases at the input resolution (``ops/upfirdn2d.transposed_to_subpixel``),
    the pixel shuffle done by the epilogue that writes the result anyway. ``fused_kernels`` (default None = on CUDA
    only) writes each StyledConv's activated concatenation with one Triton kernel (``ops/triton_epilogue.py``;
    PyTorch where Triton is missing). ``cudnn_benchmark`` (default None = on CUDA only) lets cuDNN time its
    algorithms for each new shape during this model's forward only (the global flag is restored afterwards;
    ComfyUI leaves it off). Measured on an H200 (README, ``benchmarks/gpu_check.sh``): GPEN-2048 fp16 10.8 -> 9.6
    ms per face at batch 1 and 9.2 -> 6.8 ms at batch 4 with the sub-pixel and fused forms.
    """

    def __init__(self, config: GPENConfig) -> None:
        super().__init__()
        self.config = config
        self.use_fast_path = True
        self.channels_last = True
        self.fold_blur: bool | None = None  # None: fold the FIR blurs into the convolutions on CUDA only
        self.cuda_graphs = False  # replay CUDA inputs through a captured graph (cuda_graph.py)
        self.subpixel_upsample: bool | None = None  # upsampling convs as four-phase 3x3 convs; None: when folding
        self.fused_kernels: bool | None = None  # one Triton kernel per StyledConv epilogue; None: on CUDA
        self.cudnn_benchmark: bool | None = None  # cuDNN autotuning inside our forward; None: on CUDA
        self._graph_runner = None
        self.derived_weights = DerivedWeights()  # folded / sub-pixel weights of the fast forward (weight_cache.py)
        self.generator = Generator(config)

        size = config.size
        self.ecd0 = nn.Sequential(ConvLayer(in_channels=3, out_channels=config.channels(size), kernel_size=1,
                                            downsample=False))
        for i in range(1, config.num_encoder_layers):
            resolution = size // 2**i
            layer = nn.Sequential(ConvLayer(in_channels=config.channels(resolution * 2),
                                            out_channels=config.channels(resolution), kernel_size=3,
                                            downsample=True))
            setattr(self, f"ecd{i}", layer)
        c4 = config.channels(4)
        self.final_linear = nn.Sequential(EqualLinear(in_dim=c4 * 4 * 4, out_dim=config.style_dim, activate=True))

    def _apply(self, fn, recurse=True):
        # .to() / .half() / .cuda(): derived weights would stay behind on the old device or in the old dtype
        self.derived_weights.clear()
        if self._graph_runner is not None:
            self._graph_runner.reset()
        return super()._apply(fn, recurse)

    def folds_blur(self, device: torch.device | str) -> bool:
        """Whether the fast forward on ``device`` folds the FIR blurs into the convolutions (``fold_blur``, or by
        default on CUDA only)."""
        return _auto(self.fold_blur, device)

    def uses_subpixel(self, device: torch.device | str) -> bool:
        """Whether the fast forward on ``device`` runs the upsampling convolutions in sub-pixel form (by default
        wherever it folds the blurs, since the sub-pixel form is the folded convolution rearranged)."""
        return bool(self.subpixel_upsample) if self.subpixel_upsample is not None else self.folds_blur(device)

    def uses_fused_kernels(self, device: torch.device | str) -> bool:
        """Whether the fast forward on ``device`` asks for the fused Triton epilogue (it still falls back to
        PyTorch where Triton cannot run)."""
        return _auto(self.fused_kernels, device)

    def derived_weight_bytes(self, device: torch.device | str, dtype: torch.dtype | None = None) -> int:
        """Bytes of the weights the fast forward derives and keeps on ``device`` (scaled style weights, demodulation
        norms, and where it folds blurs the folded weights): count them with the model's size when reserving
        memory."""
        if dtype is None:
            dtype = self.final_linear[0].weight.dtype
        fold = self.folds_blur(device)
        return derived_weight_bytes(self.config, dtype, folded=fold or self.uses_subpixel(device), encoder=fold)

    def encoder_layers(self) -> list[ConvLayer]:
        """``ecd0 .. ecd{L-2}`` as ConvLayers, from full resolution down to 4x4."""
        return [getattr(self, f"ecd{i}")[0] for i in range(self.config.num_encoder_layers)]

    def check_input(self, x: torch.Tensor) -> None:
        size = self.config.size
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"GPEN expects a torch.Tensor [N, 3, {size}, {size}], got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size or x.shape[0] < 1:
            raise ValueError(
                f"GPEN-{size} expects input of shape [N, 3, {size}, {size}] (RGB in [-1, 1]); "
                f"got {list(x.shape)}. Align and resize faces to {size}x{size} first."
            )
        if not x.is_floating_point():
            raise ValueError(f"GPEN expects a floating-point tensor in [-1, 1], got dtype {x.dtype}")
        if not bool(torch.isfinite(x).all()):  # one reduction (and on CUDA one sync) per forward
            raise ValueError("GPEN input contains NaN or infinite values; expected finite RGB in [-1, 1] (check the "
                             "crops or the image they come from)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        param = self.final_linear[0].weight
        x = x.to(device=param.device, dtype=param.dtype)
        if self.use_fast_path and not torch.is_grad_enabled():
            from .fast_forward import fast_forward

            if x.is_cuda:
                with _cudnn_benchmark(_auto(self.cudnn_benchmark, x.device)):
                    return self._cuda_graph_runner()(x) if self.cuda_graphs else fast_forward(self, x)
            if x.device.type == "cpu" and x.shape[0] > 1:
                # on the CPU the per-face weight path beats the shared-weight batch path (measured at 2048:
                # 4.4 s per face one by one against 6.3 s per face in a batch of 4), and needs a quarter the memory
                return torch.cat([fast_forward(self, x[i:i + 1]) for i in range(x.shape[0])])
            return fast_forward(self, x)
        return self.reference_forward(x)

    def _cuda_graph_runner(self):
        if self._graph_runner is None:
            from .cuda_graph import CUDAGraphForward

            self._graph_runner = CUDAGraphForward(self)
        return self._graph_runner

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The literal forward described in docs/network.md (also used when gradients are needed)."""
        features = []
        out = x
        for layer in self.encoder_layers():
            out = layer(out)
            features.append(out)
        code = self.final_linear(out.reshape(out.shape[0], -1))  # [N, C4*16] in C, H, W order
        return self.generator(code, features[::-1])  # features from 4x4 up to S x S

    def estimate_memory(self, batch_size: int, dtype: torch.dtype | None = None) -> int:
        """Peak bytes of one inference forward's activations (weights excluded) for ``batch_size`` faces, on the
        device the model is on (on the CPU the largest layers run in strips: ``bands.py``)."""
        param = self.final_linear[0].weight
        if dtype is None:
            dtype = param.dtype
        return estimate_forward_memory(self.config, batch_size=batch_size, dtype=dtype,
                                       banded=uses_bands(self.config, param.device))
