"""Peak memory of the all-in-one path (detect, restore, paste) against the number of faces, before and after a change.

    python benchmarks/bench_stream_memory.py --before /work/main            # this checkout is "after"
    python benchmarks/bench_stream_memory.py --model stub --cases solvay --scales auto

Runs ``Pipeline.run`` as GPEN Face Restore does (``keep_faces=False`` where the checkout has it) on two inputs:
``solvay``, the 1927 Solvay conference photo (../shared/faces/solvay_conference_1927.png, 29 faces), and ``frames``,
a batch of 16 copies of tests/data/faces/grace_hopper.jpg (one face each), at output scale 1 and ``auto``, each in
a fresh process per checkout (``--repo``), so the same command measures both. It prints, per run, the peak
resident memory of the process (``ru_maxrss``) and the resident memory once the model, detector and images are
loaded (the difference is what the run itself costs); on a GPU also ``torch.cuda.max_memory_allocated`` of the run.

``--model full``: a GPEN of the released --size configuration with random weights (bench_gpen.py's
``_random_state_dict``), which costs what the real model costs; ``--model stub``: a module of that shape
(``config.size``) whose forward is one multiplication, for the memory the crops and the paste hold without the
network's own (about the same per-face growth, in seconds instead of minutes on a CPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SOLVAY = REPO_ROOT.parent / "shared" / "faces" / "solvay_conference_1927.png"
PHOTO = REPO_ROOT / "tests" / "data" / "faces" / "grace_hopper.jpg"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def worker(args: argparse.Namespace) -> dict:
    """One run in this process, with the face pipeline of ``args.repo``."""
    sys.path.insert(0, str(Path(args.repo).resolve()))
    sys.path.insert(1, str(REPO_ROOT / "benchmarks"))  # bench_gpen (the random weights) of this checkout
    import inspect

    import torch

    from face_pipeline.detection import load_detector
    from face_pipeline.image import load_image
    from face_pipeline.pipeline import Pipeline, PipelineOptions
    from gpen_arch import RELEASED_CONFIGS, load_gpen

    device = torch.device(args.device)
    if args.model == "full":
        from bench_gpen import _random_state_dict

        model = load_gpen(_random_state_dict(args.size, 0), device=device, dtype=torch.float32)
    else:
        class Stub(torch.nn.Module):
            """GPEN-shaped: takes and returns [N, 3, S, S]; one multiplication instead of the network."""

            config = RELEASED_CONFIGS[args.size]

            def __init__(self) -> None:
                super().__init__()
                self.gain = torch.nn.Parameter(torch.full((), 0.9))

            def forward(self, x):
                return x * self.gain

        model = Stub().to(device)
    detector = load_detector(args.detector, weights_dir=args.detector_dir, device=device)
    if args.case == "solvay":
        images = load_image(SOLVAY)
    else:
        images = load_image(PHOTO).expand(args.frames, -1, -1, -1).contiguous()
    images = images.to(device)
    options = PipelineOptions.of(scale=args.scale if args.scale == "auto" else int(args.scale))
    pipeline = Pipeline(model=model, detector=detector, options=options)
    streams = "keep_faces" in inspect.signature(pipeline.run).parameters
    kwargs = {"keep_faces": False} if streams else {}
    pipeline.find(images[:1])  # warm-up of the detector (its first call allocates its caches)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated()
    loaded = _rss_bytes()
    start = time.perf_counter()
    result, report = pipeline.run(images, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    row = {"repo": str(args.repo), "case": args.case, "scale": result.scale, "asked": args.scale,
           "faces": report.faces_restored, "images": int(images.shape[0]), "streamed": streams,
           "loaded_mb": loaded / 2**20, "peak_rss_mb": _peak_rss_bytes() / 2**20, "seconds": seconds,
           "model": args.model, "device": str(device)}
    if device.type == "cuda":
        row["cuda_peak_mb"] = (torch.cuda.max_memory_allocated() - cuda_before) / 2**20
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="a checkout to measure first with the same command (e.g. main)")
    parser.add_argument("--repo", default=str(REPO_ROOT), help="the checkout whose face pipeline runs")
    parser.add_argument("--cases", nargs="+", default=["solvay", "frames"], choices=["solvay", "frames"])
    parser.add_argument("--scales", nargs="+", default=["1", "auto"], choices=["1", "2", "4", "auto"])
    parser.add_argument("--model", default="full", choices=["full", "stub"])
    parser.add_argument("--size", type=int, default=2048, choices=[256, 512, 1024, 2048])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--detector", default="retinaface_mobile0.25")
    parser.add_argument("--detector-dir", default=str(REPO_ROOT / "tests" / "data" / "detectors"))
    parser.add_argument("--json", action="store_true", help="also print one JSON line per run")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--scale", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    repos = [("before", args.before), ("after", args.repo)] if args.before else [("after", args.repo)]
    print(f"{args.model} GPEN-{args.size} on {args.device}; peak RSS (MB) of the process, RSS once loaded, and the "
          f"difference{', CUDA peak of the run' if args.device.startswith('cuda') else ''}")
    for case in args.cases:
        for scale in args.scales:
            for label, repo in repos:
                cmd = [sys.executable, __file__, "--worker", "--repo", repo, "--case", case, "--scale", scale,
                       "--model", args.model, "--size", str(args.size), "--frames", str(args.frames), "--device",
                       args.device, "--detector", args.detector, "--detector-dir", args.detector_dir]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    print(f"{case} scale {scale} {label}: failed\n{proc.stderr[-2000:]}")
                    continue
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                cuda = f", CUDA {row['cuda_peak_mb']:7.0f}" if "cuda_peak_mb" in row else ""
                print(f"{case:6} {row['images']:2} image(s) {row['faces']:2} faces, scale {scale:>4} (={row['scale']}) "
                      f"{label:6}: peak {row['peak_rss_mb']:7.0f}, loaded {row['loaded_mb']:6.0f}, run "
                      f"+{row['peak_rss_mb'] - row['loaded_mb']:6.0f}{cuda}  ({row['seconds']:.1f} s)", flush=True)
                if args.json:
                    print(json.dumps({"label": label, **row}))


if __name__ == "__main__":
    main()
