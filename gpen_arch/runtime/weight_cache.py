"""The fast forward's state beside the parameters: weights derived from them (FIR blurs folded into convolutions,
sub-pixel layouts, squared norms for demodulation, stacked style tables), computed once instead of on every forward,
and the CUDA graph replaying the forward (``cuda_graph.py``). :class:`FastPath` holds both; ``GPEN`` keeps one and
resets it whenever the model moves (``.to()``, ``.half()``, ComfyUI moving the model between devices) or
``load_state_dict`` loads new weights, so nothing derived outlives the weights it came from.

Each derived entry also remembers the storage and version counter of the parameters it came from, so weights
changed in place by other means (``param.copy_()``) rebuild it too; inference tensors have no version counter, so
for a model built under ``torch.inference_mode()`` only new storage or a ``load_state_dict`` counts. Every rebuild
bumps :attr:`DerivedWeights.generation`, which the CUDA graph keys on: a graph captured with old derived weights is
never replayed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

import torch

from .cuda_graph import TORCH_CUDA, CUDAGraphAPI, CUDAGraphForward, FastForward
from .fast_forward import fast_forward


def stamp(*sources: torch.Tensor) -> tuple:
    """What identifies the current contents of ``sources``: storage, version counter, dtype, device, shape.

    Inference tensors (a model built under ``torch.inference_mode()``, as ComfyUI's nodes run) keep no version
    counter: for them only a new storage (new weights loaded by assignment, ``.to()``) is seen."""
    return tuple((t.data_ptr(), -1 if t.is_inference() else t._version, t.dtype, t.device, tuple(t.shape))
                 for t in sources)


def _contents_stamp(tensors: Iterable[torch.Tensor]) -> tuple:
    """A lighter :func:`stamp` for checking every parameter on every graphed forward: storage and version counter
    only (a new dtype, device or shape always comes with new storage)."""
    tensors = list(tensors)
    try:
        return tuple((t.data_ptr(), t._version) for t in tensors)
    except RuntimeError:  # inference tensors keep no version counter
        return tuple((t.data_ptr(), -1 if t.is_inference() else t._version) for t in tensors)


class DerivedWeights:
    """``cache.get(key, source, build)``: ``build()``'s value, rebuilt only when ``source`` changed."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, tuple[tuple, Any]] = {}
        self.generation = 0  # bumped whenever an entry is (re)built or the cache is emptied
        self.building = 0  # > 0 while an entry is built (memory.py tells derived weights from activations)

    stamp = staticmethod(stamp)

    def get(self, key: Hashable, source: torch.Tensor | tuple, build: Callable[[], Any]) -> Any:
        """``source``: the tensor the entry is derived from, or a :func:`stamp` of several."""
        mark = source if isinstance(source, tuple) else stamp(source)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == mark:
            return entry[1]
        self.building += 1
        try:
            value = build()
        finally:
            self.building -= 1
        self._entries[key] = (mark, value)
        self.generation += 1
        return value

    def clear(self) -> None:
        if self._entries:
            self.generation += 1
        self._entries.clear()

    def nbytes(self) -> int:
        """Bytes held by the cached tensors."""
        return sum(value.numel() * value.element_size() for _, value in self._entries.values()
                   if isinstance(value, torch.Tensor))

    def __len__(self) -> int:
        return len(self._entries)


class FastPath:
    """Everything the fast forward keeps between calls: the derived weights, the CUDA graph runner and the stamp of
    the parameters that the graph was checked against. ``reset()`` drops it all.

    It also holds how the fast forward runs, injected once: ``forward(model, x, plan)`` (default
    ``fast_forward.fast_forward``) and ``cuda``, the CUDA graph and stream calls the graph runner makes (default
    ``cuda_graph.TORCH_CUDA``); a test passes stand-ins here instead of patching modules."""

    def __init__(self, *, forward: FastForward = fast_forward, cuda: CUDAGraphAPI = TORCH_CUDA) -> None:
        self.forward = forward
        self.cuda = cuda
        self.derived = DerivedWeights()
        self.graph_runner: CUDAGraphForward | None = None  # made on the first graphed forward
        self._weights_stamp: tuple | None = None
        self._weights_generation = 0

    def reset(self) -> None:
        """Forget every derived weight and free the captured graph (the model moved or loaded new weights)."""
        self.derived.clear()
        if self.graph_runner is not None:
            self.graph_runner.reset()
        self._weights_stamp = None
        self._weights_generation += 1

    def generation(self, tensors: Iterable[torch.Tensor]) -> tuple[int, int]:
        """A counter pair that changes whenever a derived weight is rebuilt or any of ``tensors`` (the model's
        parameters and buffers) changed storage or was written in place since the last call."""
        current = _contents_stamp(tensors)
        if current != self._weights_stamp:
            self._weights_stamp = current
            self._weights_generation += 1
        return self._weights_generation, self.derived.generation
