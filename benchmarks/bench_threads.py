"""How much the CPU output depends on the thread count, and which PyTorch ops make it depend.

    python benchmarks/bench_threads.py tests/data/faces \
        --model tests/data/gpen/compact/compact_512_cm2_n0.0625_s64.safetensors
    python benchmarks/bench_threads.py ../shared/faces --model ../shared/gpen/vectors/gpen_512_cm2_n0.25.pth \\
        --threads 1 2 --ops --detector retinaface_mobile0.25 --detector-dir ../shared/detectors

Runs ``cli.main`` on the inputs with each ``--threads`` count (into temporary folders), then compares every output
file with the first count's: decoded 8-bit values, their largest and mean absolute difference, how many differ, and
the time of each run. ``--ops`` then runs the pipeline on each input once more under a dispatch mode that runs every
PyTorch op with each thread count on the same inputs and names the ops whose results differ (their weight shape
and where they were called from), which is how docs/performance.md "Thread count and the same bytes" was found.
Extra arguments after ``--`` go to the command line (e.g. ``-- --mask parsing``).
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
import traceback
from pathlib import Path

import cv2
import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def decoded(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{path} is not an image OpenCV reads")
    return image.astype(np.int32)


def compare_runs(args: argparse.Namespace, extra: list[str]) -> None:
    import cli

    base = Path(tempfile.mkdtemp(prefix="gpen-threads-"))
    outputs = {}
    for threads in args.threads:
        out = base / f"t{threads}"
        start = time.perf_counter()
        status = cli.main([*args.inputs, "--model", args.model, "--output", str(out), "--detector", args.detector,
                           "--detector-dir", args.detector_dir, "--no-download", "--threads", str(threads), *extra])
        print(f"--threads {threads}: exit {status}, {time.perf_counter() - start:.1f} s")
        outputs[threads] = {p.relative_to(out): p for p in sorted(out.rglob("*")) if p.is_file()}
    first, *others = args.threads
    for threads in others:
        total = differing = 0
        largest, sums = 0, 0.0
        for name, path in outputs[first].items():
            a, b = decoded(path), decoded(outputs[threads][name])
            diff = np.abs(a - b)
            total, differing = total + diff.size, differing + int((diff > 0).sum())
            largest, sums = max(largest, int(diff.max())), sums + float(diff.sum())
            same = path.read_bytes() == outputs[threads][name].read_bytes()
            print(f"  {name}: {'same bytes' if same else 'differs'}; values: max {diff.max()}/255, mean "
                  f"{diff.mean():.2e}, {(diff > 0).sum()} of {diff.size} differ")
        print(f"{first} vs {threads} threads, all files: max {largest}/255, mean {sums / max(total, 1):.2e}, "
              f"{differing} of {total} values differ")


def thread_dependent_ops(args: argparse.Namespace) -> None:
    """Every PyTorch op of the pipeline run with each thread count on the same inputs; those that differ."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten, tree_map

    from face_jobs import collect_inputs
    from face_pipeline.detection import load_detector
    from face_pipeline.image import load_image
    from face_pipeline.pipeline import Pipeline, PipelineOptions
    from gpen_arch import load_gpen_file

    counts = list(args.threads)

    class EachThreadCount(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.calls: collections.Counter = collections.Counter()
            self.differ: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = str(func)
            tensors = [t for t in tree_flatten((args, kwargs))[0] if torch.is_tensor(t)]
            aliased = any(r.alias_info is not None for r in func._schema.returns)
            if aliased or name.startswith(("aten.empty", "aten.new_empty")) or any(t.device.type != "cpu"
                                                                                  for t in tensors):
                return func(*args, **kwargs)  # a view, uninitialised memory, or not the CPU

            def clone(t):
                return t.clone() if torch.is_tensor(t) else t

            results = []
            for threads in counts[1:]:
                torch.set_num_threads(threads)
                results.append(tree_flatten(func(*tree_map(clone, args), **tree_map(clone, kwargs)))[0])
            torch.set_num_threads(counts[0])
            result = func(*args, **kwargs)
            self.calls[name] += 1
            for other in results:
                for x, y in zip(tree_flatten(result)[0], other):
                    floats = torch.is_tensor(x) and x.device.type == "cpu" and x.is_floating_point()
                    if floats and not torch.equal(x, y):
                        where = [f"{Path(f.filename).relative_to(REPO_ROOT)}:{f.lineno}"
                                 for f in traceback.extract_stack() if f.filename.startswith(str(REPO_ROOT))
                                 and "benchmarks" not in f.filename][-1:]
                        shape = tuple(tensors[1].shape) if len(tensors) > 1 else tuple(tensors[0].shape)
                        self.differ[name][(shape, *where)] += 1
                        break
            return result

    model = load_gpen_file(args.model, device="cpu", dtype=torch.float32)
    detector = load_detector(args.detector, weights_dir=args.detector_dir)
    pipeline = Pipeline(model=model, detector=detector, options=PipelineOptions())
    mode = EachThreadCount()
    with torch.no_grad():
        for item in collect_inputs(args.inputs).files:
            with mode:
                pipeline.run(load_image(Path(str(item.source))))  # local inputs
    print(f"ops run with {counts} threads: {sum(mode.calls.values())} calls of {len(mode.calls)} ops")
    for name, places in mode.differ.items():
        print(f"{name}: {sum(places.values())} of {mode.calls[name]} calls differ")
        for (shape, *where), n in places.most_common(30):
            print(f"  {n} x weight/input {shape} at {', '.join(where)}")


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--model", required=True)
    parser.add_argument("--detector", default="yunet_opencv")
    parser.add_argument("--detector-dir", default=str(REPO_ROOT / "tests" / "data" / "detectors"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (the first: reference)")
    parser.add_argument("--ops", action="store_true", help="also name the ops whose results differ")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, OpenCV {cv2.__version__}")
    compare_runs(args, extra)
    if args.ops:
        thread_dependent_ops(args)


if __name__ == "__main__":
    main()
