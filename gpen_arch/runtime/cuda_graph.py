"""Replaying the fast forward as a captured CUDA graph: at batch 1 the forward's ~300 small kernel launches cost more
CPU time than the GPU spends computing, and a graph replays them all in one call.

A graph is tied to the input's shape and dtype, to the plan it ran (``fast_plan.py``) and to the weights it read,
derived ones included: it is keyed on all of them, the weights through ``FastPath.generation`` (``weight_cache.py``),
which changes whenever a parameter or buffer gets new storage or is written in place, or a derived weight is
rebuilt. So a graph is captured again when the model moves, loads new weights (``load_state_dict`` also resets the
runner) or runs another plan, and never replays folded weights older than the parameters. Each graph keeps its
activations allocated in a private pool while it lives: only one is kept at a time, and ``reset()`` frees it.

Batches smaller than the captured one do not recapture (a node's last, partial batch would otherwise throw the
graph away twice per call): from half the captured size up they are padded into it (faces are independent, so the
padding rows change nothing), below that they run eagerly, until ``recapture_after`` such calls in a row show that
the batch size has really changed. A larger batch is captured at once.

The forward it captures and the parts of ``torch.cuda`` it calls (``CUDAGraphAPI``) are arguments, the real ones by
default, so the policy above can be run on the CPU with stand-ins (``tests/test_arch_cuda_graph_policy.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch

from ..interrupt import between_blocks, block_done
from .fast_forward import fast_forward
from .fast_plan import FastPlan

#: ``forward(model, x, plan)``: what a graph captures and a remainder runs eagerly (``fast_forward.fast_forward``).
FastForward = Callable[[Any, torch.Tensor, FastPlan], torch.Tensor]


class _Generations(Protocol):
    """What the runner reads of its model's ``fast_path`` (a ``weight_cache.FastPath``, whose module imports this
    one): the counter pair that keys a graph on the weights."""

    def generation(self, tensors: Iterable[torch.Tensor]) -> tuple[int, int]: ...


@dataclass(frozen=True)
class CUDAGraphAPI:
    """The parts of ``torch.cuda`` the graph runner calls, each looked up when called (``TORCH_CUDA``: the real
    ones). ``new_graph()`` -> a ``CUDAGraph``; ``capture(graph)`` -> the context capturing into it;
    ``new_stream(device)``, ``current_stream(device)`` -> streams; ``use_stream(stream)`` -> the context running on
    it."""

    new_graph: Callable[[], Any] = lambda: torch.cuda.CUDAGraph()
    capture: Callable[[Any], contextlib.AbstractContextManager] = lambda graph: torch.cuda.graph(graph)
    new_stream: Callable[[torch.device], Any] = lambda device: torch.cuda.Stream(device=device)
    current_stream: Callable[[torch.device], Any] = lambda device: torch.cuda.current_stream(device)
    use_stream: Callable[[Any], contextlib.AbstractContextManager] = lambda stream: torch.cuda.stream(stream)


TORCH_CUDA = CUDAGraphAPI()


class CUDAGraphForward:
    """``runner(x)``: the model's fast forward for ``x`` ``[N, 3, S, S]`` on CUDA, via a cached CUDA graph.

    ``forward``: the forward captured and run eagerly (default ``fast_forward``); ``cuda``: the CUDA graph and
    stream calls (default ``TORCH_CUDA``)."""

    def __init__(self, model: torch.nn.Module, *, forward: FastForward = fast_forward,
                 cuda: CUDAGraphAPI = TORCH_CUDA, warmup: int = 2, recapture_after: int = 3) -> None:
        self.model = model  # a GPEN: its ``fast_path`` holds this runner
        self.forward = forward
        self.cuda = cuda
        self.warmup = warmup
        self.recapture_after = recapture_after
        self.captures = 0  # graphs captured so far (for tests and logs)
        self._captured_key: tuple | None = None
        self._graph: Any = None  # a torch.cuda.CUDAGraph (or the injected API's)
        self._static_in: torch.Tensor | None = None
        self._static_out: torch.Tensor | None = None
        self._small_calls = 0  # consecutive calls too small for the captured graph

    def reset(self) -> None:
        """Free the captured graph and its memory pool."""
        self._captured_key = self._graph = self._static_in = self._static_out = None
        self._small_calls = 0

    @property
    def captured_batch(self) -> int:
        """Batch size of the graph held now (0 when none)."""
        return 0 if self._static_in is None else self._static_in.shape[0]

    def _key(self, x: torch.Tensor, plan: FastPlan) -> tuple:
        tensors = [*self.model.parameters(), *self.model.buffers()]
        fast_path = cast(_Generations, self.model.fast_path)  # nn.Module's __getattr__ is typed Tensor | Module
        return tuple(x.shape[1:]), x.dtype, x.device, plan, fast_path.generation(tensors)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, plan: FastPlan) -> torch.Tensor:
        """``plan``: the model's ``FastPlan`` for ``x``'s device and dtype."""
        key = self._key(x, plan)
        n, captured = x.shape[0], self.captured_batch
        if key != self._captured_key or not captured >= n >= captured / 2:  # the graph held cannot take this batch
            if key == self._captured_key and n < captured:
                self._small_calls += 1
                if self._small_calls < self.recapture_after:
                    return self.forward(self.model, x, plan)  # a remainder: not worth padding to the graph's size
            self._capture(x, plan)
        self._small_calls = 0
        static_in, static_out = self._static_in, self._static_out
        if static_in is None or static_out is None:  # cannot happen: a graph is held (captured just above or before)
            raise RuntimeError("CUDAGraphForward: no captured graph to replay")
        block_done()  # the replay itself cannot stop part-way (a few ms per face): Cancel is checked before it
        static_in[:n].copy_(x)
        self._graph.replay()
        return static_out[:n].clone()

    def _capture(self, x: torch.Tensor, plan: FastPlan) -> None:
        cuda = self.cuda
        self.reset()
        static_in = x.clone()
        stream = cuda.new_stream(x.device)
        stream.wait_stream(cuda.current_stream(x.device))
        with cuda.use_stream(stream):
            for _ in range(self.warmup):  # lets cuDNN pick its algorithms outside the capture
                self.forward(self.model, static_in, plan)
        cuda.current_stream(x.device).wait_stream(stream)
        graph = cuda.new_graph()
        with between_blocks(None), cuda.capture(graph):  # no Cancel part-way through a capture
            static_out = self.forward(self.model, static_in, plan)
        key = self._key(x, plan)  # after the warm-up, which may have (re)built derived weights
        self._captured_key, self._graph, self._static_in, self._static_out = key, graph, static_in, static_out
        self.captures += 1
