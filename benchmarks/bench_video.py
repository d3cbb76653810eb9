"""Frames per second of the whole pipeline on a video: detect -> align -> restore -> paste, batches of frames.

    python benchmarks/bench_video.py --device cuda --sizes 512 2048 --batches 1 4 16 --frames 64
    python benchmarks/bench_video.py --device cpu --sizes 512 --batches 1 4 --frames 8     # keep CPU runs short
    python benchmarks/bench_video.py --device cpu --batches 1 4 16 \
        --weights tests/data/gpen/compact/compact_512_cm2_n0.0625_s64.safetensors     # a small real model

The clip is made from one shared photo (default ../shared/faces/grace_hopper.jpg): N frames of 1920x1080, the photo
scaled up ~1.4x and drifting a few pixels and a few percent in size from frame to frame on a grey background, one
face per frame. The frames live on ``--device`` and every stage runs there: detection batched over the frames
(``--detector``, default kornia YuNet: network, decode, score filter and one NMS for the whole batch on the device,
one transfer of the results; ``yunet_opencv`` runs image by image on the CPU), the batched alignment warp, restore
in batches of ``--batches`` faces, paste-back at 1x. GPEN weights are random but full-size (the released
configuration for each size), so the restore costs what a real model costs; the outputs are not meaningful images;
``--weights FILE`` runs a GPEN checkpoint instead (e.g. the small compact test models in tests/data/gpen/compact,
for a quick CPU run). Precision: fp16 on CUDA, fp32 on the CPU (``--dtype`` to change it).

Per row: frames per second over the timed frames (after one warm-up batch that builds derived weights, tunes cuDNN
and compiles kernels; on the CPU one warm-up frame), the time per frame of each stage (on CUDA each stage ends with
a synchronize, so they add up to the total), the network alone per face on the same crops at the same batch size
(on the CPU, where the network runs face by face at any batch size, once per model, one face), and the pipeline's
overhead over it: total time / (network time x faces) - 1.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gpen import _random_state_dict, add_plan_flags, apply_plan_flags  # noqa: E402

from face_pipeline.alignment import align_faces  # noqa: E402
from face_pipeline.detection import load_detector  # noqa: E402
from face_pipeline.image import load_image  # noqa: E402
from face_pipeline.paste import PasteOptions, paste_faces  # noqa: E402
from face_pipeline.restoration import RestoreOptions, restore_faces  # noqa: E402
from gpen_arch import load_gpen, load_gpen_file  # noqa: E402
from gpen_arch.runtime.precision import DTYPES, choose_dtype  # noqa: E402

STAGES = ("detect", "align", "restore", "paste")


def make_clip(photo: torch.Tensor, frames: int, *, height: int = 1080, width: int = 1920,
              device: torch.device) -> torch.Tensor:
    """``[frames, 3, height, width]`` float32 RGB 0..1 on ``device``: ``photo`` ``[1, 3, h, w]`` scaled by
    1.4 +- 4% and moved along a small ellipse (+- 40 px) over a grey background, one pose per frame."""
    photo = photo.to(device)
    clip = torch.full((frames, 3, height, width), 0.45, device=device)
    for t in range(frames):
        phase = 2 * math.pi * t / max(frames, 8)
        scale = 1.4 * (1 + 0.04 * math.sin(phase))
        h = min(height, round(photo.shape[-2] * scale))
        w = min(width, round(photo.shape[-1] * scale))
        frame = F.interpolate(photo, size=(h, w), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
        y = (height - h) // 2 + round(40 * math.sin(phase))
        x = (width - w) // 2 + round(40 * math.cos(phase))
        y, x = min(max(y, 0), height - h), min(max(x, 0), width - w)
        clip[t, :, y:y + h, x:x + w] = frame[0]
    return clip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_batch(frames: torch.Tensor, *, detector, model, batch: int, times: dict | None) -> int:
    """One batch of frames through every stage; adds each stage's seconds to ``times``. Returns the faces."""
    device = frames.device
    marks = [time.perf_counter()]
    found = detector.detect(frames)
    faces = [per_image[0] for per_image in found if per_image]  # the largest-score face of each frame
    _sync(device)
    marks.append(time.perf_counter())
    aligned = align_faces(frames, faces, size=model.config.size)
    _sync(device)
    marks.append(time.perf_counter())
    restored = restore_faces(model, aligned, options=RestoreOptions(batch_size=batch))
    _sync(device)
    marks.append(time.perf_counter())
    paste_faces(restored, options=PasteOptions(scale=1))
    _sync(device)
    marks.append(time.perf_counter())
    if times is not None:
        for name, start, stop in zip(STAGES, marks, marks[1:]):
            times[name] += stop - start
    return len(faces)


def network_alone(model, frames: torch.Tensor, *, detector, batch: int, dtype: torch.dtype, runs: int) -> float:
    """Seconds per face of the network alone on the first ``batch`` frames' aligned crops, ``batch`` at once."""
    found = detector.detect(frames[:batch])
    faces = [per_image[0] for per_image in found if per_image]
    crops = align_faces(frames[:batch], faces, size=model.config.size).crops
    x = (crops * 2 - 1).to(dtype)
    device = frames.device
    with torch.no_grad():
        if device.type == "cuda":
            model(x)  # warm-up at this batch size
            _sync(device)
        start = time.perf_counter()
        for _ in range(runs):
            model(x)
        _sync(device)
    return (time.perf_counter() - start) / (runs * len(faces))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048], choices=[256, 512, 1024, 2048])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--frames", type=int, default=None,
                        help="timed frames per row (default: 64 on CUDA, the largest batch on the CPU)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="default: auto (fp16 on CUDA and MPS, fp32 on the CPU: gpen_arch/runtime/precision.py)")
    parser.add_argument("--image", default=str(REPO_ROOT.parent / "shared" / "faces" / "grace_hopper.jpg"))
    parser.add_argument("--detector", default="yunet",
                        help="yunet (kornia, batched on the device; default), retinaface_mobile0.25, "
                             "retinaface_resnet50 (batched too), yunet_opencv (image by image on the CPU)")
    parser.add_argument("--weights", default=None,
                        help="a GPEN checkpoint to run instead of random full-size weights (its size replaces --sizes)")
    parser.add_argument("--detector-dir", default=str(REPO_ROOT.parent / "shared" / "detectors"))
    parser.add_argument("--network-runs", type=int, default=None, help="runs of the network-alone timing")
    parser.add_argument("--cuda-graphs", action="store_true", help="FastOptions.cuda_graphs")
    add_plan_flags(parser)
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = choose_dtype(args.dtype or "auto", device)
    frames_wanted = args.frames or (64 if device.type == "cuda" else max(args.batches))
    network_runs = args.network_runs or (10 if device.type == "cuda" else 1)
    detector = load_detector(args.detector, weights_dir=args.detector_dir, device=device)
    photo = load_image(args.image)
    clip = make_clip(photo, frames_wanted + max(args.batches), device=device)  # + one warm-up batch
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, {torch.get_num_threads()} threads; clip {frames_wanted} frames of "
          f"{clip.shape[-1]}x{clip.shape[-2]} from {Path(args.image).name}, detector {args.detector}"
          f" ({'batched on the device' if detector.module is not None else 'image by image on the CPU'}), "
          f"{str(dtype).replace('torch.', '')}, "
          f"{Path(args.weights).name if args.weights else 'random full-size GPEN weights'}"
          f"{', CUDA graphs' if args.cuda_graphs else ''}")
    print(f"{'model':>9} {'batch':>5} {'frames':>6} {'frames/s':>9} "
          + " ".join(f"{stage + ' ms':>10}" for stage in STAGES)
          + f" {'network ms':>10} {'overhead':>8}")
    for size in [None] if args.weights else args.sizes:
        if args.weights:
            model = load_gpen_file(args.weights, device=device, dtype=dtype)
            size = model.config.size
        else:
            model = load_gpen(_random_state_dict(size, 0), device=device, dtype=dtype)
        apply_plan_flags(model, args)  # --cuda-graphs and the auto / on / off flags: one table (bench_gpen.py)
        network = None  # seconds per face of the network alone (on the CPU measured once: face by face anyway)
        for batch in args.batches:
            # warm-up: on CUDA the whole batch (cuDNN tunes per shape, graphs capture per batch); on the CPU one
            # frame (derived weights), since nothing there depends on the batch size
            frames = clip[:batch] if device.type == "cuda" else clip[:1]
            run_batch(frames, detector=detector, model=model, batch=batch, times=None)
            times = dict.fromkeys(STAGES, 0.0)
            done = faces = 0
            start = time.perf_counter()
            while done < frames_wanted:
                stop = min(done + batch, frames_wanted)
                faces += run_batch(clip[batch + done:batch + stop], detector=detector, model=model, batch=batch,
                                   times=times)
                done = stop
            total = time.perf_counter() - start
            if device.type == "cuda" or network is None:
                network = network_alone(model, clip, detector=detector, batch=batch if device.type == "cuda" else 1,
                                        dtype=dtype, runs=network_runs)
            per_frame = {stage: 1000 * seconds / done for stage, seconds in times.items()}
            overhead = total / (network * faces) - 1 if faces else float("nan")
            fps = done / total
            print(f"{'GPEN-' + str(size):>9} {batch:>5} {done:>6} {fps:>9.{2 if fps >= 1 else 4}f} "
                  + " ".join(f"{per_frame[stage]:>10.1f}" for stage in STAGES)
                  + f" {1000 * network:>10.1f} {100 * overhead:>7.0f}%", flush=True)
            if faces != done:
                print(f"  note: faces found in {faces} of {done} frames", flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
