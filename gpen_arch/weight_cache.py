"""Weights the fast forward derives from the parameters (FIR blurs folded into convolutions, sub-pixel layouts,
squared norms for demodulation), computed once instead of on every forward.

Each entry remembers the storage and version counter of the parameter it came from, so loading new weights into
the model (in place or not) rebuilds it; inference tensors have no version counter, so for a model built under
``torch.inference_mode()`` only new storage counts. ``GPEN._apply`` (``.to()``, ``.half()``, ComfyUI moving the model between
devices) empties the cache, so no derived tensor stays behind on a device the model has left.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch


class DerivedWeights:
    """``cache.get(key, source, build)``: ``build()``'s tensor, rebuilt only when ``source`` changed."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, tuple[tuple, torch.Tensor]] = {}

    @staticmethod
    def stamp(*sources: torch.Tensor) -> tuple:
        """What identifies the current contents of ``sources``: storage, version counter, dtype, device, shape.

        Inference tensors (a model built under ``torch.inference_mode()``, as ComfyUI's nodes run) keep no version
        counter: for them only a new storage (new weights loaded by assignment, ``.to()``) is seen."""
        return tuple((t.data_ptr(), -1 if t.is_inference() else t._version, t.dtype, t.device, tuple(t.shape))
                     for t in sources)

    def get(self, key: Hashable, source: torch.Tensor | tuple, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``source``: the tensor the entry is derived from, or a :meth:`stamp` of several."""
        stamp = source if isinstance(source, tuple) else self.stamp(source)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == stamp:
            return entry[1]
        value = build()
        self._entries[key] = (stamp, value)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def nbytes(self) -> int:
        """Bytes held by the cached tensors."""
        return sum(value.numel() * value.element_size() for _, value in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
