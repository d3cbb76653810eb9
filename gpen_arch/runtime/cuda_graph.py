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
"""

from __future__ import annotations

import torch

from .interrupt import between_blocks, block_done


class CUDAGraphForward:
    """``runner(x)``: the model's fast forward for ``x`` ``[N, 3, S, S]`` on CUDA, via a cached CUDA graph."""

    def __init__(self, model: torch.nn.Module, *, warmup: int = 2, recapture_after: int = 3) -> None:
        self.model = model  # a GPEN: its ``fast_path`` holds this runner
        self.warmup = warmup
        self.recapture_after = recapture_after
        self.captures = 0  # graphs captured so far (for tests and logs)
        self._captured_key: tuple | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
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

    def _key(self, x: torch.Tensor, plan) -> tuple:
        tensors = [*self.model.parameters(), *self.model.buffers()]
        return tuple(x.shape[1:]), x.dtype, x.device, plan, self.model.fast_path.generation(tensors)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, plan) -> torch.Tensor:
        """``plan``: the model's ``FastPlan`` for ``x``'s device and dtype."""
        from .fast_forward import fast_forward

        key = self._key(x, plan)
        n, captured = x.shape[0], self.captured_batch
        if key != self._captured_key or not captured >= n >= captured / 2:  # the graph held cannot take this batch
            if key == self._captured_key and n < captured:
                self._small_calls += 1
                if self._small_calls < self.recapture_after:
                    return fast_forward(self.model, x, plan)  # a remainder: not worth padding to the graph's size
            self._capture(x, plan)
        self._small_calls = 0
        block_done()  # the replay itself cannot stop part-way (a few ms per face): Cancel is checked before it
        self._static_in[:n].copy_(x)
        self._graph.replay()
        return self._static_out[:n].clone()

    def _capture(self, x: torch.Tensor, plan) -> None:
        from .fast_forward import fast_forward

        self.reset()
        static_in = x.clone()
        stream = torch.cuda.Stream(device=x.device)
        stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):  # lets cuDNN pick its algorithms outside the capture
                fast_forward(self.model, static_in, plan)
        torch.cuda.current_stream(x.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with between_blocks(None), torch.cuda.graph(graph):  # no Cancel part-way through a capture
            static_out = fast_forward(self.model, static_in, plan)
        key = self._key(x, plan)  # after the warm-up, which may have (re)built derived weights
        self._captured_key, self._graph, self._static_in, self._static_out = key, graph, static_in, static_out
        self.captures += 1
