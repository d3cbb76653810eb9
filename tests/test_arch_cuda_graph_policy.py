"""When the CUDA-graph runner captures, pads or runs eagerly, checked on the CPU with CUDA's graph API stood in for.

The stand-in graph records the forward run during capture and replays it on the captured input buffer, which is what
a CUDA graph does with its static addresses; ``tests/test_arch_cuda.py`` checks the real thing on a GPU. The stand-ins
(the forward and a ``CUDAGraphAPI``) are passed to the runner, nothing in ``torch.cuda`` or the package is patched.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from gpen_arch import GPEN, FastOptions, FastPlan, GPENConfig
from gpen_arch.runtime.cuda_graph import CUDAGraphAPI, CUDAGraphForward
from gpen_arch.runtime.fast_forward import fast_forward
from gpen_arch.runtime.weight_cache import FastPath

PLAN = FastPlan(cuda_graphs=True)


class FakeGraph:
    capturing: FakeGraph | None = None

    def __init__(self) -> None:
        self.recorded = None

    def replay(self) -> None:
        static_in, static_out = self.recorded
        static_out.copy_(static_in * 2)

    @staticmethod
    @contextlib.contextmanager
    def capture(graph: FakeGraph):
        FakeGraph.capturing = graph
        try:
            yield
        finally:
            FakeGraph.capturing = None


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.fast_path = FastPath()
        self.eager_batches: list[int] = []


class Stream:
    def wait_stream(self, other) -> None:
        pass


def stand_in_cuda(graph_type) -> CUDAGraphAPI:
    """CUDA's graph and stream calls stood in for: ``graph_type()`` graphs captured by ``graph_type.capture``."""
    return CUDAGraphAPI(new_graph=graph_type, capture=graph_type.capture, new_stream=lambda device: Stream(),
                        current_stream=lambda device: Stream(), use_stream=lambda stream: contextlib.nullcontext())


@pytest.fixture
def runner():
    def forward(model, x, plan):
        out = x * 2
        if FakeGraph.capturing is not None:
            FakeGraph.capturing.recorded = (x, out)
        else:
            model.eager_batches.append(x.shape[0])
        return out

    return CUDAGraphForward(Model(), forward=forward, cuda=stand_in_cuda(FakeGraph), warmup=1, recapture_after=3)


def batch(n: int, start: float = 0.0) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1) + start


def test_same_batch_replays_without_recapture(runner):
    for start in (0.0, 10.0, 20.0):
        assert torch.equal(runner(batch(4, start), PLAN), batch(4, start) * 2)
    assert runner.captures == 1 and runner.captured_batch == 4


def test_partial_batch_is_padded_into_the_graph(runner):
    runner(batch(4), PLAN)
    out = runner(batch(3, 100.0), PLAN)
    assert out.shape[0] == 3 and torch.equal(out, batch(3, 100.0) * 2)
    out = runner(batch(2, 50.0), PLAN)  # half the captured size still pads
    assert torch.equal(out, batch(2, 50.0) * 2)
    assert runner.captures == 1


def test_small_remainder_runs_eagerly_then_recaptures_if_it_persists(runner):
    runner(batch(4), PLAN)
    runner.model.eager_batches.clear()  # the capture's own warm-up
    assert torch.equal(runner(batch(1, 7.0), PLAN), batch(1, 7.0) * 2)
    assert runner.captures == 1 and runner.model.eager_batches == [1]
    runner(batch(4), PLAN)  # back to the full size: the graph is still there
    assert runner.captures == 1
    for _ in range(3):  # the batch size really changed
        assert torch.equal(runner(batch(1, 3.0), PLAN), batch(1, 3.0) * 2)
    assert runner.captures == 2 and runner.captured_batch == 1


def test_larger_batch_or_new_shape_recaptures(runner):
    runner(batch(2), PLAN)
    runner(batch(4), PLAN)
    assert runner.captures == 2 and runner.captured_batch == 4
    out = runner(torch.ones(4, 1, 2, 2), PLAN)
    assert runner.captures == 3 and torch.equal(out, torch.full((4, 1, 2, 2), 2.0))


def test_another_plan_or_changed_weights_recapture(runner):
    runner(batch(2), PLAN)
    runner(batch(2), PLAN.replace(subpixel=True))
    assert runner.captures == 2
    with torch.no_grad():
        runner.model.weight.mul_(1.0)  # written in place: the version counter moves
    runner(batch(2), PLAN.replace(subpixel=True))
    assert runner.captures == 3
    runner(batch(2), PLAN.replace(subpixel=True))
    assert runner.captures == 3


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


# ---------------------------------------------------------------- a real GPEN through a stood-in graph, on the CPU
class ReplayGraph:
    """A CUDA graph stood in for: ``replay`` runs the captured forward again on its static input, reading the derived
    weights as they were at capture (a real graph's kernels read those tensors' fixed addresses and never rebuild
    them) and the parameters as they are now (same addresses, maybe new contents)."""

    capturing: ReplayGraph | None = None

    def __init__(self) -> None:
        self.recorded = None

    def replay(self) -> None:
        model, static_in, plan, static_out, entries = self.recorded
        cache = model.fast_path.derived
        live_get = cache.get
        cache.get = lambda key, source, build: entries[key][1] if key in entries else live_get(key, source, build)
        try:
            static_out.copy_(REAL_FAST_FORWARD(model, static_in, plan))
        finally:
            del cache.get

    @staticmethod
    @contextlib.contextmanager
    def capture(graph: ReplayGraph):
        ReplayGraph.capturing = graph
        try:
            yield
        finally:
            ReplayGraph.capturing = None


REAL_FAST_FORWARD = fast_forward
CONFIG = GPENConfig(size=32, channel_multiplier=1, narrow=0.125)
GRAPHED = FastPlan(fold_blur=True, subpixel=True, cuda_graphs=True)


@pytest.fixture
def graphed():
    """A GPEN whose fast path holds a graph runner working through :class:`ReplayGraph`."""

    def forward(model, x, plan):
        out = REAL_FAST_FORWARD(model, x, plan)
        if ReplayGraph.capturing is not None:
            ReplayGraph.capturing.recorded = (model, x, plan, out, dict(model.fast_path.derived._entries))
        return out

    models = [random_gpen(seed) for seed in (0, 1)]
    runner = CUDAGraphForward(models[0], forward=forward, cuda=stand_in_cuda(ReplayGraph), warmup=1)
    models[0].fast_path.graph_runner = runner
    return models, runner, torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1


def random_gpen(seed: int) -> GPEN:
    torch.manual_seed(seed)
    model = GPEN(CONFIG).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("noise.weight") or (name.endswith("bias") and "modulation" not in name):
                param.uniform_(0.1, 0.5)
    return model


def reference(model: GPEN, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.reference_forward(x)


def test_in_place_load_state_dict_recaptures_the_graph(graphed):
    (model, other), runner, x = graphed
    first = runner(x, GRAPHED)
    assert (runner(x, GRAPHED) - first).abs().max() == 0 and runner.captures == 1  # replayed
    model.load_state_dict(other.state_dict())  # in place: the same addresses, new values
    after = runner(x, GRAPHED)
    assert runner.captures == 2
    assert (after - reference(other, x)).abs().max() < 1e-4
    assert (after - first).abs().max() > 1e-3


def test_weights_written_in_place_recapture_the_graph(graphed):
    (model, other), runner, x = graphed
    runner(x, GRAPHED)
    with torch.no_grad():  # no load_state_dict, no hook: only the version counters say it
        for mine, theirs in zip(model.parameters(), other.parameters()):
            mine.copy_(theirs)
    assert (runner(x, GRAPHED) - reference(other, x)).abs().max() < 1e-4
    assert runner.captures == 2


def test_the_stand_in_replays_stale_derived_weights_when_the_key_misses_the_change(graphed, monkeypatch):
    """What a graph keyed on addresses alone did (the stand-in reproduces it, so the tests above can fail)."""
    (model, other), runner, x = graphed
    model.fast_path.graph_runner = None  # the load hook cannot reach this runner
    monkeypatch.setattr(runner, "_key", lambda x, plan: (tuple(x.shape), plan))
    runner(x, GRAPHED)
    model.load_state_dict(other.state_dict())
    stale = runner(x, GRAPHED)
    assert runner.captures == 1
    assert (stale - reference(other, x)).abs().max() > 1e-3


def test_model_forward_uses_its_graph_runner_on_cuda_only(graphed):
    (model, _), runner, x = graphed
    model.fast_options = FastOptions(cuda_graphs=True)
    with torch.no_grad():
        model(x)  # on the CPU the plan has no graphs
    assert runner.captures == 0
