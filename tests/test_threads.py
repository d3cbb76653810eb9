"""--threads: one CPU thread count for the local engine and every Ray worker (CPU pixels depend on it).

Checked here: the option's range, that the local engine computes with it (PyTorch and OpenCV) and gives the process
its own counts back, that the count changes CPU pixels (so sharing it is what makes the engines agree), and that each
Ray actor computes with it and reserves as many CPUs. The byte-for-byte comparison of the two engines with the
defaults is tests/test_ray_engine.py::test_same_bytes_and_status_as_the_local_engine_by_default.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, data_file

from face_jobs import ItemResult, JobSummary, Outcome, PendingWrite, PlannedOutput
from face_jobs.config import RayOptions
from face_jobs.engines.ray_cluster import code_runtime_env
from face_jobs.job import Worker
from face_jobs.threads import DEFAULT_THREADS, MAX_THREADS, check_threads, cpu_threads

MODEL = ("gpen", "compact", "compact_256_cm1_n0.0625_s64.safetensors")


def cli_args(inputs: Path, output: Path, *extra: str) -> list[str]:
    return [str(inputs), "--model", str(data_file(*MODEL)), "--output", str(output), "--detector", "yunet_opencv",
            "--no-download", *extra]


@pytest.fixture()
def two_threads():
    """The process computes with 2 threads (PyTorch and OpenCV) as on a machine with several cores; restored after."""
    torch_threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    yield
    torch.set_num_threads(torch_threads)
    cv2.setNumThreads(cv2_threads)


@pytest.mark.parametrize("value", ["0", "-2", "1025"])
def test_threads_out_of_range_is_a_usage_error_before_any_work(tmp_path, capsys, two_threads, value):
    import cli

    assert cli.main(cli_args(data_file("faces", "grace_hopper.jpg"), tmp_path / "out", "--threads", value)) == 2
    assert capsys.readouterr().err.strip() == f"error: --threads must be a whole number in 1..1024, got {value}"
    assert not (tmp_path / "out").exists() and torch.get_num_threads() == 2


def test_threads_must_be_a_whole_number(tmp_path, capsys):
    import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(cli_args(data_file("faces", "grace_hopper.jpg"), tmp_path / "out", "--threads", "1.5"))
    assert exited.value.code == 2 and capsys.readouterr().err.strip() == (
        "error: argument --threads: invalid int value: '1.5' (python cli.py --help lists the options)")


def test_the_option_record_checks_its_thread_count():
    assert DEFAULT_THREADS == 1 and check_threads(MAX_THREADS) == MAX_THREADS
    for bad in (0, -1, MAX_THREADS + 1, 1.0, True, "2"):
        with pytest.raises(ValueError, match=r"the thread count must be a whole number in 1\.\.1024, got "):
            check_threads(bad)  # pyright: ignore[reportArgumentType]
    assert RayOptions().threads == DEFAULT_THREADS and RayOptions(threads=3).threads == 3
    with pytest.raises(ValueError, match="got 0"):
        RayOptions(threads=0)


def test_cpu_threads_sets_both_libraries_and_restores_them(two_threads):
    with cpu_threads(3):
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (3, 3)
    assert (torch.get_num_threads(), cv2.getNumThreads()) == (2, 2)
    with pytest.raises(RuntimeError, match="stop"), cpu_threads(1):  # restored when the run fails too
        raise RuntimeError("stop")
    assert (torch.get_num_threads(), cv2.getNumThreads()) == (2, 2)


@pytest.mark.parametrize(("extra", "expected"), [((), DEFAULT_THREADS), (("--threads", "3"), 3)])
def test_the_local_engine_computes_with_threads(tmp_path, monkeypatch, two_threads, extra, expected):
    import cli

    seen = []
    photo = Worker.photo

    def counting(self, item):
        seen.append((torch.get_num_threads(), cv2.getNumThreads()))
        return photo(self, item)

    monkeypatch.setattr(Worker, "photo", counting)
    assert cli.main(cli_args(data_file("faces", "grace_hopper.jpg"), tmp_path / "out", *extra)) == 0
    assert seen == [(expected, expected)]
    assert (torch.get_num_threads(), cv2.getNumThreads()) == (2, 2)  # the process's own counts, given back


def test_the_thread_count_changes_cpu_pixels_by_little(tmp_path):
    """Why the engines share the count: 1 and 2 threads give different bytes for the same photo, a few values off by
    a level or two (measured: 69 values, max 1, from the compact 512 model's 1x1 ToRGB convolutions and skip
    upsampling; docs/performance.md). Kernels that split their work differently on another CPU may differ less."""
    import cli

    model = data_file("gpen", "compact", "compact_512_cm2_n0.0625_s64.safetensors")
    photo = data_file("faces", "grace_hopper.jpg")
    outputs = []
    for threads in ("1", "2"):
        out = tmp_path / f"t{threads}"
        assert cli.main([str(photo), "--model", str(model), "--output", str(out), "--no-download",
                         "--threads", threads]) == 0
        outputs.append(np.asarray(cv2.imread(str(out / "grace_hopper.jpg")), dtype=int))
    difference = abs(outputs[0] - outputs[1])
    if not difference.any():
        pytest.skip("this CPU's kernels gave the same pixels with 1 and 2 threads")
    assert difference.max() <= 4 and (difference > 0).mean() < 0.001


needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason='ray[data] is not installed (pip install "ray[data]"; CI installs it from '
                                      'requirements-test.txt)')


class ThreadProbe:
    """A job for ``run_on_ray`` whose "restored image" is what its actor computes with and reserves, as JSON."""

    def __init__(self, *, sink) -> None:
        self.sink = sink

    def photo(self, item: PlannedOutput) -> ItemResult:
        import cv2
        import ray
        import torch

        resources = ray.get_runtime_context().get_assigned_resources()
        data = json.dumps({"torch": torch.get_num_threads(), "opencv": cv2.getNumThreads(),
                           "cpus": resources.get("CPU")}).encode()
        self.sink(PendingWrite(item.target, data))
        return ItemResult(item.source, Outcome.RESTORED)


@pytest.fixture(scope="module")
def ray_with_the_probe():
    """A local 2-CPU Ray whose workers get ``ThreadProbe`` by value (tests/ is not shipped to them)."""
    ray = pytest.importorskip("ray")
    cloudpickle = pytest.importorskip("ray.cloudpickle")
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024, log_to_driver=False,
             runtime_env=code_runtime_env(REPO_ROOT))
    yield ray
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(module)


@needs_ray
@pytest.mark.parametrize("threads", [1, 2])
def test_each_ray_actor_computes_with_threads_and_reserves_as_many_cpus(ray_with_the_probe, tmp_path, threads):
    from face_jobs.engines.ray_images import run_on_ray

    (tmp_path / "out").mkdir()
    items = []
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(b"")
        items.append(PlannedOutput(tmp_path / f"{i}.png", Path(f"{i}.png"), tmp_path / "out" / f"{i}.json"))
    summary = JobSummary(images=len(items), report=lambda _line: None)
    options = RayOptions(threads=threads, workers=2 // threads, batch_size=2)  # the workers fit in 2 CPUs
    run_on_ray(items, ThreadProbe, summary=summary, options=options)
    assert summary.restored == 3 and not summary.failed
    for i in range(3):
        seen = json.loads((tmp_path / "out" / f"{i}.json").read_text())
        assert seen == {"torch": threads, "opencv": threads, "cpus": float(threads)}
