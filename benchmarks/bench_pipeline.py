"""Time each stage of the face pipeline for one face, against the restore itself.

    python benchmarks/bench_pipeline.py --size 2048 --detector yunet_opencv

Uses full-size random GPEN weights (the released configuration for --size) so the restore costs what a real model
costs; the photo defaults to tests/data/faces/grace_hopper.jpg and the detector weights to tests/data/detectors (OpenCV
YuNet from the copy shipped with the pack). Prints the median over --runs of detection,
alignment, restore and paste-back (at 1x and at the auto scale), and their share of the restore time.
``--profile`` adds what the restore call runs beyond the network's own forward (``torch.profiler``, one call each):
the operators whose count or time differ, with their CPU and device time, to account for a restore slower than
the network alone.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gpen import PLAN_FLAGS, _random_state_dict, add_plan_flags, apply_plan_flags  # noqa: E402

from face_pipeline.alignment import align_faces  # noqa: E402
from face_pipeline.detection import load_detector  # noqa: E402
from face_pipeline.image import load_image  # noqa: E402
from face_pipeline.paste import PasteOptions, paste_faces  # noqa: E402
from face_pipeline.restoration import RestoreOptions, restore_faces  # noqa: E402
from gpen_arch import load_gpen  # noqa: E402
from gpen_arch.runtime.precision import DTYPES  # noqa: E402


def timed(fn, runs: int, device: torch.device):
    times, result = [], None
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, choices=[256, 512, 1024, 2048])
    parser.add_argument("--image", default=str(REPO_ROOT / "tests" / "data" / "faces" / "grace_hopper.jpg"))
    parser.add_argument("--detector", default="yunet_opencv")
    parser.add_argument("--detector-dir", default=str(REPO_ROOT / "tests" / "data" / "detectors"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--runs", type=int, default=3)
    add_plan_flags(parser)
    parser.add_argument("--cuda-graphs", action="store_true", help="FastOptions.cuda_graphs")
    parser.add_argument("--profile", action="store_true", help="list what restore_faces adds to the forward")
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    model = load_gpen(_random_state_dict(args.size, 0), device=device, dtype=dtype)
    apply_plan_flags(model, args)  # --cuda-graphs and the auto / on / off flags: one table (bench_gpen.py)
    detector = load_detector(args.detector, weights_dir=args.detector_dir, device=device)
    image = load_image(args.image).to(device)

    detect_s, found = timed(lambda: detector.detect(image), args.runs, device)
    faces = found[0][:1]
    if not faces:
        raise SystemExit("no face found in the image")
    align_s, batch = timed(lambda: align_faces(image, faces, size=args.size), args.runs, device)
    restore_faces(model, batch)  # warm-up
    restore_s, restored = timed(lambda: restore_faces(model, batch), args.runs, device)
    x = (batch.crops.to(device) * 2 - 1).to(dtype)  # the network alone, on the same input, for comparison
    with torch.no_grad():
        network_s, _ = timed(lambda: model(x), args.runs, device)
    paste1_s, _ = timed(lambda: paste_faces(restored, options=PasteOptions(scale=1)), args.runs, device)
    paste_auto_s, result = timed(lambda: paste_faces(restored, options=PasteOptions(scale="auto")), args.runs,
                                 device)

    print(f"GPEN-{args.size} {args.dtype} on {device}, image {tuple(image.shape[-2:])}, detector {args.detector}, "
          + ", ".join(f"{flag} {getattr(args, flag.replace('-', '_'))}" for flag in PLAN_FLAGS)
          + f"{', CUDA graphs' if args.cuda_graphs else ''}")
    rows = [("detect", detect_s), ("align", align_s), ("paste 1x", paste1_s),
            (f"paste auto ({result.scale}x)", paste_auto_s)]
    print(f"{'restore':>18}: {restore_s * 1000:9.1f} ms  (the network alone: {network_s * 1000:.1f} ms)")
    for name, seconds in rows:
        print(f"{name:>18}: {seconds * 1000:9.1f} ms  ({100 * seconds / restore_s:5.1f}% of the restore)")
    overhead = detect_s + align_s + paste1_s
    print(f"{'overhead (1x)':>18}: {overhead * 1000:9.1f} ms  ({100 * overhead / restore_s:5.1f}% of the restore)")
    fixed_s, _ = timed(lambda: restore_faces(model, batch, options=RestoreOptions(batch_size=1)), args.runs, device)
    print(f"{'restore batch 1':>18}: {fixed_s * 1000:9.1f} ms  (batch size given: no free-memory query)")
    if args.profile:
        with torch.no_grad():
            profile_difference(lambda: restore_faces(model, batch), lambda: model(x), device)


def _operator_totals(fn, device: torch.device) -> dict[str, tuple[int, float, float]]:
    """``{operator: (calls, self CPU us, self device us)}`` of one call of ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return {event.key: (event.count, event.self_cpu_time_total,
                        getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0.0)))
            for event in prof.key_averages()}


def profile_difference(restore, network, device: torch.device) -> None:
    """Print the operators whose calls or time differ between one ``restore`` call and one ``network`` call."""
    ours, alone = _operator_totals(restore, device), _operator_totals(network, device)
    rows = []
    for key, (calls, cpu, dev) in ours.items():
        base_calls, base_cpu, base_dev = alone.get(key, (0, 0.0, 0.0))
        if calls != base_calls or abs(cpu - base_cpu) > 200 or abs(dev - base_dev) > 50:
            rows.append((cpu - base_cpu + dev - base_dev, key, calls - base_calls, cpu - base_cpu, dev - base_dev))
    print(f"restore minus network, by operator ({'CPU and device' if device.type == 'cuda' else 'CPU'} time, us):")
    for _, key, calls, cpu, dev in sorted(rows, reverse=True)[:25]:
        print(f"  {key[:60]:<60} calls {calls:+4d}  cpu {cpu:+10.0f}  device {dev:+9.0f}")


if __name__ == "__main__":
    main()
