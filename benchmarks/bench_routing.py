"""Model routing by face size against one model for every face: time and peak memory of a whole photo, same run.

    python benchmarks/bench_routing.py --threads 2

The group photo (default: ../shared/faces/solvay_conference_1927.png, 29 faces of 30-45 px) is restored by
``Pipeline.run`` (detection, alignment, restore, paste; the bundled OpenCV YuNet detector) with GPEN-2048 alone and
with the set {512, 2048} (``smallest_sufficient``: each face to the smallest model at least its size in the output),
both with full-size random weights (``RELEASED_CONFIGS``: what a released model costs; random weights make noise
faces, which does not change the time). Each configuration runs in a fresh child process (peak RSS is the child's
``ru_maxrss``, weights included: the set holds two models), the sides alternating (set, alone, set, ...; ``--runs``
pairs), on ``--threads`` CPU threads. A portrait (default: ../shared/faces/pexels_woman_large_face.jpeg, one large
face, which the set gives to its largest model) is then restored both ways and its output bytes compared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def child(args: argparse.Namespace) -> None:
    """One configuration in this process: prints a JSON line of its figures."""
    import torch
    from bench_gpen import _random_state_dict

    from face_pipeline.detection import DEFAULT_DETECTOR, load_detector
    from face_pipeline.image import load_image
    from face_pipeline.pipeline import Pipeline, PipelineOptions
    from face_pipeline.restoration import ModelSet
    from gpen_arch import load_gpen

    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.child.split(",")]
    models = ModelSet(models=tuple(load_gpen(_random_state_dict(size, seed=size)).eval() for size in sizes))
    detector = load_detector(DEFAULT_DETECTOR, weights_dir=REPO_ROOT / "tests" / "data" / "detectors",
                             allow_download=False)
    image = load_image(Path(args.photo))
    loaded_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pipeline = Pipeline(model=models, detector=detector,
                        options=PipelineOptions.of(scale=args.scale, model_routing="smallest_sufficient"))
    start = time.perf_counter()
    result, report = pipeline.run(image, keep_faces=False)
    seconds = time.perf_counter() - start
    assert report.choices is not None
    per_model = pipeline.face_models(image, report.choices)
    counts: dict[int, int] = {}
    for size, _ in per_model.values():
        counts[size] = counts.get(size, 0) + 1
    pixels = result.images.mul(255).round().to(torch.uint8).numpy().tobytes()
    print(json.dumps({"models": sizes, "seconds": seconds, "faces": report.faces_restored,
                      "per_model": {str(k): v for k, v in sorted(counts.items())},
                      "restore_seconds": report.stage_seconds.get("restore", 0.0),
                      "loaded_rss": loaded_rss, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "sha256": hashlib.sha256(pixels).hexdigest()}))


def run_child(models: str, photo: str, args: argparse.Namespace) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", models, "--photo", photo, "--threads",
                           str(args.threads), "--scale", str(args.scale)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the child for {models} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", default=str(SHARED / "faces" / "solvay_conference_1927.png"))
    parser.add_argument("--portrait", default=str(SHARED / "faces" / "pexels_woman_large_face.jpeg"))
    parser.add_argument("--small", type=int, default=512, choices=[256, 512, 1024])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scale", default="1", choices=["1", "2", "4", "auto"])
    parser.add_argument("--runs", type=int, default=1, help="pairs (set, alone), alternating")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.scale = args.scale if args.scale == "auto" else int(args.scale)
    if args.child:
        child(args)
        return
    both, alone = f"{args.small},2048", "2048"
    rows: dict[str, list[dict]] = {both: [], alone: []}
    for _ in range(args.runs):
        for models in (both, alone):
            rows[models].append(run_child(models, args.photo, args))
            print(f"  {models}: {rows[models][-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
    print(f"{Path(args.photo).name}, scale {args.scale}, {args.threads} threads, full-size random weights, "
          f"{args.runs} run(s) each, alternating")
    print("| models | faces per model | time (s) | restore (s) | peak RSS (MiB) | peak RSS after loading (MiB) |")
    print("|---|---|---|---|---|---|")
    for models, runs in rows.items():
        best = min(runs, key=lambda r: r["seconds"])
        per_model = ", ".join(f"{k}: {v}" for k, v in best["per_model"].items())
        print(f"| {{{models}}} | {per_model} | {best['seconds']:.1f} | {best['restore_seconds']:.1f} | "
              f"{best['peak_rss'] / 2**20:.0f} | {best['loaded_rss'] / 2**20:.0f} |")
    if args.portrait and Path(args.portrait).exists():
        routed, single = run_child(both, args.portrait, args), run_child(alone, args.portrait, args)
        same = routed["sha256"] == single["sha256"]
        print(f"portrait {Path(args.portrait).name}: faces per model {routed['per_model']} with the set; output bytes "
              f"{'identical' if same else 'DIFFERENT'} to GPEN-2048 alone ({routed['sha256'][:16]})")


if __name__ == "__main__":
    main()
