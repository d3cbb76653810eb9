"""How much memory one inference forward needs, so callers can size batches before they run out.

Nothing here describes the network a second time: the fast forward itself (``fast_forward.py``, with the plan the
model would run) runs once on a shape-only (meta-device) model of the configuration, built by the network class the
caller passes (``GPEN``: ``model.py`` imports this module, never the other way), and two things are read off that
run:

- the activation peak: every tensor the forward allocates (views and in-place results excluded) is counted from
  its creation until it is freed, and the largest total is the estimate per face (a batch of N needs N times that;
  on the CPU batches run face by face, so this errs on the safe side). The weights (``model_bytes``) and the derived
  weights come on top;
- the derived weights (``derived_weight_bytes``): what the fast forward's own builders cached (``weight_cache.py``);
  their allocations do not count as activations.

``benchmarks/bench_gpen.py`` prints the estimate beside the measured peak (``act. MB`` / ``est. MB``; the README's
table has the figures). The run is kept per (configuration, the plan's memory-relevant decisions, dtype): a few
seconds once per process at the largest size, then free.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from ..config import GPENConfig
from .fast_forward import fast_forward
from .fast_plan import FastPlan

#: Builds the network of a configuration (the ``GPEN`` class: an ``nn.Module`` with a ``fast_path``), called under
#: ``torch.device("meta")``.
Network = Callable[[GPENConfig], Any]

#: Allocator slack (fragmentation, convolution workspaces) on top of the tensors the run counts.
OVERHEAD = 1.15


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of the tensors alive while code runs under it (meta tensors: nothing is computed). A result
    that aliases an input (a view, an in-place or ``out=`` op) allocates nothing; allocations made while
    ``derived.building`` is set are the derived weights, kept for the model's life, not activations."""

    def __init__(self, derived) -> None:
        super().__init__()
        self.derived = derived
        self.live = 0
        self.peak = 0

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.derived.building or any(r.alias_info is not None for r in func._schema.returns):
            return out
        for tensor in pytree.tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                nbytes = tensor.untyped_storage().nbytes()
                self.live += nbytes
                self.peak = max(self.peak, self.live)
                weakref.finalize(tensor, self._free, nbytes)
        return out


@functools.lru_cache(maxsize=64)
def _meta_run(network: Network, config: GPENConfig, plan: FastPlan, dtype: torch.dtype) -> tuple[int, int]:
    """(activation peak bytes of one face, derived weight bytes) of ``fast_forward`` running ``plan`` on a meta
    ``network(config)`` in ``dtype``."""
    with torch.device("meta"):
        model = network(config).to(dtype)
        x = torch.empty((1, 3, config.size, config.size), dtype=dtype)
    counter = _LiveBytes(model.fast_path.derived)
    with torch.no_grad(), counter:
        fast_forward(model, x, plan)
        del x
    return counter.peak, model.fast_path.derived.nbytes()


def _memory_plan(plan: FastPlan) -> FastPlan:
    """The decisions that change what a forward allocates (Winograd's transformed tiles too); the rest (graphs,
    cuDNN tuning, the Triton epilogue, which writes the same tensors as its PyTorch form) set to their plain values
    so equal runs share the cache."""
    return FastPlan(channels_last=plan.channels_last, fold_blur=plan.fold_blur, subpixel=plan.subpixel,
                    banded=plan.banded, winograd=plan.winograd)


def forward_memory(network: Network, config: GPENConfig, *, batch_size: int, dtype: torch.dtype,
                   plan: FastPlan = FastPlan()) -> int:
    """Peak bytes of activations for one inference forward of ``batch_size`` faces (weights excluded) of
    ``network(config)``, with allocator slack, for the fast forward running ``plan`` (default: the plain CPU form,
    blurs unfolded and no strips, which allocates the most; ``FastPlan(banded=True)``: the largest layers in strips,
    ``bands.py``). ``gpen_arch.estimate_forward_memory`` is this for ``GPEN``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    per_face, _ = _meta_run(network, config, _memory_plan(plan), dtype)
    return int(per_face * batch_size * OVERHEAD)


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers as they are stored now."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def derived_weight_bytes(network: Network, config: GPENConfig, plan: FastPlan, dtype: torch.dtype) -> int:
    """Bytes of the weights the fast forward derives once and keeps (``weight_cache.py``) when it runs ``plan`` for
    ``network(config)`` in ``dtype``: summed from what its own builders cached in the meta run above."""
    return _meta_run(network, config, _memory_plan(plan), dtype)[1]
