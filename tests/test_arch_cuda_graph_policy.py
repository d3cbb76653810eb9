"""When the CUDA-graph runner captures, pads or runs eagerly, checked on the CPU with CUDA's graph API stood in for.

The stand-in graph records the forward run during capture and replays it on the captured input buffer, which is what
a CUDA graph does with its static addresses; ``tests/test_arch_cuda.py`` checks the real thing on a GPU.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from gpen_arch import cuda_graph
from gpen_arch import fast_forward as fast_forward_module


class FakeGraph:
    capturing: FakeGraph | None = None

    def __init__(self) -> None:
        self.recorded = None

    def replay(self) -> None:
        static_in, static_out = self.recorded
        static_out.copy_(static_in * 2)


@contextlib.contextmanager
def fake_capture(graph: FakeGraph):
    FakeGraph.capturing = graph
    try:
        yield
    finally:
        FakeGraph.capturing = None


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.channels_last = True
        self.fold_blur = self.subpixel_upsample = self.fused_kernels = None
        self.eager_batches: list[int] = []


@pytest.fixture
def runner(monkeypatch):
    def forward(model, x):
        out = x * 2
        if FakeGraph.capturing is not None:
            FakeGraph.capturing.recorded = (x, out)
        else:
            model.eager_batches.append(x.shape[0])
        return out

    monkeypatch.setattr(fast_forward_module, "fast_forward", forward)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", fake_capture)
    class Stream:
        def wait_stream(self, other) -> None:
            pass

    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    return cuda_graph.CUDAGraphForward(Model(), warmup=1, recapture_after=3)


def batch(n: int, start: float = 0.0) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1) + start


def test_same_batch_replays_without_recapture(runner):
    for start in (0.0, 10.0, 20.0):
        assert torch.equal(runner(batch(4, start)), batch(4, start) * 2)
    assert runner.captures == 1 and runner.captured_batch == 4


def test_partial_batch_is_padded_into_the_graph(runner):
    runner(batch(4))
    out = runner(batch(3, 100.0))
    assert out.shape[0] == 3 and torch.equal(out, batch(3, 100.0) * 2)
    out = runner(batch(2, 50.0))  # half the captured size still pads
    assert torch.equal(out, batch(2, 50.0) * 2)
    assert runner.captures == 1


def test_small_remainder_runs_eagerly_then_recaptures_if_it_persists(runner):
    runner(batch(4))
    runner.model.eager_batches.clear()  # the capture's own warm-up
    assert torch.equal(runner(batch(1, 7.0)), batch(1, 7.0) * 2)
    assert runner.captures == 1 and runner.model.eager_batches == [1]
    runner(batch(4))  # back to the full size: the graph is still there
    assert runner.captures == 1
    for _ in range(3):  # the batch size really changed
        assert torch.equal(runner(batch(1, 3.0)), batch(1, 3.0) * 2)
    assert runner.captures == 2 and runner.captured_batch == 1


def test_larger_batch_or_new_shape_recaptures(runner):
    runner(batch(2))
    runner(batch(4))
    assert runner.captures == 2 and runner.captured_batch == 4
    out = runner(torch.ones(4, 1, 2, 2))
    assert runner.captures == 3 and torch.equal(out, torch.full((4, 1, 2, 2), 2.0))


def test_gpu_options_default_to_cuda_only():
    from gpen_arch import GPEN, GPENConfig

    model = GPEN(GPENConfig(size=64, channel_multiplier=1, narrow=0.25))
    assert (model.uses_subpixel("cuda"), model.uses_fused_kernels("cuda"), model.folds_blur("cuda")) == (True,) * 3
    assert (model.uses_subpixel("cpu"), model.uses_fused_kernels("cpu"), model.folds_blur("cpu")) == (False,) * 3
    model.fold_blur = False  # no folding: no sub-pixel form either, unless asked for
    assert not model.uses_subpixel("cuda") and model.uses_fused_kernels("cuda")
    model.subpixel_upsample, model.fused_kernels = True, False  # explicit settings win on every device
    assert model.uses_subpixel("cpu") and not model.uses_fused_kernels("cuda")


def test_cudnn_benchmark_is_restored_after_the_forward_even_on_error():
    from gpen_arch.model import _cudnn_benchmark

    saved = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        with pytest.raises(RuntimeError), _cudnn_benchmark(True):
            assert torch.backends.cudnn.benchmark
            raise RuntimeError("out of memory")
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = saved
