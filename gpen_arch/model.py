"""GPEN: the FullGenerator of GPEN-BFR (a U-Net encoder feeding a StyleGAN2 decoder)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from .config import GPENConfig
from .generator import Generator
from .interrupt import between_blocks, block_done
from .layers import ConvLayer, EqualLinear
from .runtime import memory
from .runtime.cuda_graph import TORCH_CUDA, CUDAGraphAPI, CUDAGraphForward, FastForward
from .runtime.fast_forward import fast_forward
from .runtime.fast_plan import FastOptions, FastPlan, resolve_plan
from .runtime.weight_cache import FastPath


@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool):
    """``torch.backends.cudnn.benchmark = enabled`` for the block, then the caller's setting again."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def _reset_fast_path(module: GPEN, incompatible_keys) -> None:
    """``load_state_dict`` post-hook: new weights (copied in place or assigned) invalidate everything derived."""
    module.fast_path.reset()


class GPEN(nn.Module):
    """GPEN FullGenerator.

    ``forward(x)``: ``x`` is ``[N, 3, S, S]`` RGB in [-1, 1] (float32, float16 or bfloat16, the model's dtype);
    returns the raw restored image ``[N, 3, S, S]`` in the input's dtype, nominally in [-1, 1] but **not clamped**.
    A wrong shape or dtype, or NaN/inf in ``x``, raises ``ValueError``.

    Attribute names reproduce the released keys: ``generator.*``, then ``ecd0 .. ecd{L-2}``, then ``final_linear``.

    How the inference forward runs is ``fast_options`` (a frozen ``FastOptions``, ``runtime/fast_plan.py``: the
    optimised forward of ``runtime/fast_forward.py`` or the literal reference forward, channels-last activations,
    folded blurs, sub-pixel upsampling, the fused Triton epilogue, cuDNN autotuning, CUDA graphs, strips, per-face
    batches; None = auto per device). Each forward resolves it into a ``FastPlan`` for the input's device and dtype
    (cached) and runs from that. Change it by assigning a new record: ``model.fast_options =
    model.fast_options.replace(cuda_graphs=True)``. ``fast_path`` (``weight_cache.FastPath``) holds what the fast
    forward keeps between calls (derived weights, the CUDA graph); it is reset whenever the model moves or loads new
    weights. The README's benchmark table says what each option buys.

    ``forward`` and ``cuda`` (keyword-only) are the fast forward and the CUDA graph calls it runs through, the real
    ones by default (``runtime/cuda_graph.py``); a test passes stand-ins to observe or replace them.
    """

    def __init__(self, config: GPENConfig, *, forward: FastForward = fast_forward,
                 cuda: CUDAGraphAPI = TORCH_CUDA) -> None:
        super().__init__()
        self.config = config
        self.fast_options = FastOptions()
        self.fast_path = FastPath(forward=forward, cuda=cuda)  # derived weights, graph runner (weight_cache.py)
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
        self.register_load_state_dict_post_hook(_reset_fast_path)

    def _apply(self, fn, recurse=True):
        # .to() / .half() / .cuda(): derived weights would stay behind on the old device or in the old dtype
        self.fast_path.reset()
        return super()._apply(fn, recurse)

    def _head(self) -> EqualLinear:
        """``final_linear[0]``, typed (``nn.Sequential`` indexes to ``nn.Module``)."""
        return cast(EqualLinear, self.final_linear[0])

    def _param_dtype(self) -> torch.dtype:
        return self._head().weight.dtype

    def plan(self, device: torch.device | str, dtype: torch.dtype | None = None) -> FastPlan:
        """The ``FastPlan`` that ``fast_options`` resolves to for ``device`` and ``dtype`` (default: the model's)."""
        return resolve_plan(self.fast_options, self.config, device, self._param_dtype() if dtype is None else dtype)

    def derived_weight_bytes(self, device: torch.device | str, dtype: torch.dtype | None = None) -> int:
        """Bytes of the weights the fast forward derives and keeps on ``device`` (scaled style weights, demodulation
        norms, and where it folds blurs the folded weights): count them with the model's size when reserving
        memory. Measured by running the fast forward's own builders on a shape-only copy (``runtime/memory.py``)."""
        dtype = self._param_dtype() if dtype is None else dtype
        return memory.derived_weight_bytes(GPEN, self.config, self.plan(device, dtype), dtype)

    def pending_weight_bytes(self, device: torch.device | str) -> int:
        """Bytes of derived weights (folded blurs, ``runtime/weight_cache.py``) this model will build on its first
        forward on ``device`` and has not built yet (0 once built): a caller sizing a batch to free memory counts
        them."""
        return max(int(self.derived_weight_bytes(device)) - self.fast_path.derived.nbytes(), 0)

    def encoder_layers(self) -> list[ConvLayer]:
        """``ecd0 .. ecd{L-2}`` as ConvLayers, from full resolution down to 4x4."""
        return [getattr(self, f"ecd{i}")[0] for i in range(self.config.num_encoder_layers)]

    def check_input(self, x: torch.Tensor) -> Callable[[], None]:
        """Raise ``ValueError`` unless ``x`` is a float ``[N, 3, S, S]`` tensor of finite values.

        The finiteness check needs the values: on the CPU (and wherever the caller's data still is before the model
        moves it) it runs at once. On CUDA, reading the answer at once would stall the host until the GPU has
        caught up, once per forward; instead the reduction is queued before the forward, its one-byte answer copied
        to pinned host memory behind an event, and the returned callable raises after the forward has been queued:
        by then the reduction is long done, so waiting for its event costs nothing. The error is the same; only
        the moment it is raised differs (the forward on non-finite input runs and is thrown away; no device-side
        assert, which would kill the CUDA context). Returns that callable (a no-op when already checked)."""
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
        if _tracing():  # torch.export / torch.compile / the JIT tracer: the values are symbolic, nothing to read
            return _checked
        if x.is_cuda:
            with torch.no_grad():
                finite = torch.isfinite(x).all()
            answer = torch.empty((), dtype=torch.bool, pin_memory=True)
            answer.copy_(finite, non_blocking=True)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(x.device))

            def deferred() -> None:
                event.synchronize()
                if not bool(answer):
                    _raise_not_finite()

            return deferred
        if not bool(torch.isfinite(x).all()):
            _raise_not_finite()
        return _checked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_finite = self.check_input(x)
        x = x.to(device=self._head().weight.device, dtype=self._param_dtype())
        plan = self.plan(x.device, x.dtype)
        if plan.fast and not torch.is_grad_enabled():
            out = self._fast_forward(x, plan)
        else:
            out = self.reference_forward(x)
        check_finite()
        return out

    def _fast_forward(self, x: torch.Tensor, plan: FastPlan) -> torch.Tensor:
        fast_path = self.fast_path
        if plan.per_face and x.shape[0] > 1:  # the CPU default: faster there, and a fraction of the memory
            return torch.cat([self._fast_forward(x[i:i + 1], plan) for i in range(x.shape[0])])
        if x.is_cuda:
            with _cudnn_benchmark(plan.cudnn_benchmark):
                if plan.cuda_graphs:
                    if fast_path.graph_runner is None:
                        fast_path.graph_runner = CUDAGraphForward(self, forward=fast_path.forward, cuda=fast_path.cuda)
                    return fast_path.graph_runner(x, plan)
                return fast_path.forward(self, x, plan)
        return fast_path.forward(self, x, plan)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The literal forward described in docs/network.md (also used when gradients are needed)."""
        features = []
        out = x
        for layer in self.encoder_layers():
            out = layer(out)
            features.append(out)
            block_done()
        code = self.final_linear(out.reshape(out.shape[0], -1))  # [N, C4*16] in C, H, W order
        return self.generator(code, features[::-1])  # features from 4x4 up to S x S

    @staticmethod
    def between_blocks(hook: Callable[[], None] | None) -> contextlib.AbstractContextManager:
        """Within the block, this context's forwards call ``hook()`` between their blocks (layers, decoder steps,
        strips), so it can raise to cancel a forward in under a second on a CPU (``interrupt.py``). Host side only:
        no tensor is read for it, so a GPU forward gains no synchronisation."""
        return between_blocks(hook)

    def estimate_memory(self, batch_size: int, dtype: torch.dtype | None = None) -> int:
        """Peak bytes of one inference forward's activations (weights excluded) for ``batch_size`` faces, on the
        device the model is on, as its plan runs there (on the CPU the largest layers run in strips:
        ``runtime/bands.py``)."""
        dtype = self._param_dtype() if dtype is None else dtype
        plan = self.plan(self._head().weight.device, dtype)
        return estimate_forward_memory(self.config, batch_size=batch_size, dtype=dtype, plan=plan)


def estimate_forward_memory(config: GPENConfig, *, batch_size: int, dtype: torch.dtype,
                            plan: FastPlan = FastPlan()) -> int:
    """Peak bytes of activations for one inference forward of ``batch_size`` faces of a GPEN of ``config`` (weights
    excluded), with allocator slack, for the fast forward running ``plan`` (default: the plain CPU form, which
    allocates the most; ``FastPlan(banded=True)``: the largest layers in strips). Measured by running the fast
    forward on a shape-only GPEN (``runtime/memory.py``)."""
    return memory.forward_memory(GPEN, config, batch_size=batch_size, dtype=dtype, plan=plan)


def _tracing() -> bool:
    """Whether this forward is being traced into a graph (ONNX export, torch.export, torch.compile, torch.jit.trace)."""
    exporting = getattr(torch.compiler, "is_exporting", None)
    # torch.jit.is_tracing is public (documented) but missing from torch.jit.__all__, so pyright calls it private
    return (torch.jit.is_tracing() or torch.compiler.is_compiling()  # pyright: ignore[reportPrivateImportUsage]
            or (exporting is not None and exporting()))


def _raise_not_finite() -> None:
    raise ValueError("GPEN input contains NaN or infinite values; expected finite RGB in [-1, 1] (check the crops or "
                     "the image they come from)")


def _checked() -> None:
    """The finiteness check already ran."""
