"""Temporal smoothing of restored faces in video mode (``VideoOptions.temporal_smoothing``): flicker and lag, per clip
and strength, for two models.

    python benchmarks/bench_temporal.py                      # the table of docs/pipeline.md: 6-13 min on 2 CPU cores
    python benchmarks/bench_temporal.py --models compact     # the compact model alone: well under a minute
    python benchmarks/bench_temporal.py --window 4 --threshold 0.03   # another window or threshold
    python benchmarks/bench_temporal.py --models compact --threshold 1000   # without the change test (ghosts)
    python benchmarks/bench_temporal.py --models compact --no-register      # without the registration

Clips (made here from tests/data/faces, 192x224 frames, one face of about 85 px; every frame gets its own Gaussian
noise, sigma 4/255, and is then JPEG re-encoded at quality 70, as a compressed video would be):

- ``still``: grace_hopper.jpg, the same picture in every frame (48 frames): only the noise and the compression change;
- ``pan``: a slow pan and zoom over grace_hopper.jpg (1 px and 0.4 % of zoom per frame, 32 frames);
- ``cut``: 16 frames of grace_hopper.jpg, then 16 of astronaut.jpg (a scene cut at frame 16);
- ``mouth``: grace_hopper.jpg whose mouth opens over frames 8-12 (a local vertical stretch of the mouth region, up to
  80 %), holds, and closes over frames 24-28 (32 frames): an expression change;
- ``light``: grace_hopper.jpg dimmed by 25 % over frames 12-16 (32 frames): a change of light.

Each clip runs through the pipeline as ``--video-frames`` does (detect, track, smooth the landmarks, restore and paste
at 1x; ``Pipeline.restore_and_paste`` with a ``TemporalFilter``) at each strength; a model's outputs are computed once
per crop and reused across strengths (the crops are the same: smoothing comes after the restore).

Measures, in 8-bit levels, inside the face region (weighted by the paste mask of the frame, 0..1):

- **flicker**: the mean absolute change between consecutive output frames (over the pairs of one shot: not across
  the cut);
- **lag**: the mean absolute difference between the output and the frame-by-frame restoration (strength 0) of the
  same frame, on the frames where the input face changes or changed less than a window (6 frames) before: every
  frame of ``pan``, the 6 frames from the cut on in ``cut``, those from the mouth's first move to 6 frames after its
  last in ``mouth``, from the light's in ``light``; on ``still``, every frame (what averaging the noise changes);
- **noise**: the flicker of ``still`` at strength 0, i.e. what the noise alone changes between the frame-by-frame
  restorations of consecutive frames.

Goals (issue 25): flicker on ``still`` at most 0.4x that at strength 0; lag on the moving clips at most 1.5x noise.
The ``ratio`` columns give flicker / flicker at strength 0, and lag / noise. ``input d`` lines give, per clip, the
distribution of ``d`` (``video/temporal.py``: the change of the low-passed input crop between consecutive frames, per
cell, grey 0..1) that the threshold is chosen from.

Both models have random weights (no released GPEN weights in the repository): ``compact`` is the compact 256 test
vector of tests/data (what CI runs), ``full`` is a full-width GPEN 512 (the released configuration) with random
weights. Random weights turn small input changes into large output changes, so they exaggerate flicker (and the
lag measured against it) compared with a trained model; the ratios are what carries over.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gpen import _random_state_dict  # noqa: E402

from face_pipeline.detection import load_detector  # noqa: E402
from face_pipeline.options import PipelineOptions  # noqa: E402
from face_pipeline.paste.color import STATS_SIZE, stats_copy  # noqa: E402
from face_pipeline.pipeline import Pipeline, selected_faces, video_cuts  # noqa: E402
from face_pipeline.video import temporal  # noqa: E402
from gpen_arch import load_gpen, load_gpen_file  # noqa: E402

FACES = REPO_ROOT / "tests" / "data" / "faces"
COMPACT = REPO_ROOT / "tests" / "data" / "gpen" / "compact" / "compact_256_cm1_n0.0625_s64.safetensors"
WIDTH, HEIGHT = 192, 224
NOISE = 4 / 255
JPEG_QUALITY = 70
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
FACE_MASK = 0.999  # the face region: where the paste mask is 1 (the restored face alone)


# ---------------------------------------------------------------------------------------------------- the clips
def _fit(image: np.ndarray, zoom: float = 1.0, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """``image`` (BGR uint8) scaled to cover WIDTH x HEIGHT, zoomed in by ``zoom`` about its centre and moved by
    ``shift`` output pixels, as float32 BGR 0..255."""
    h, w = image.shape[:2]
    scale = max(WIDTH / w, HEIGHT / h) * zoom
    matrix = np.array([[scale, 0, WIDTH / 2 - scale * w / 2 + shift[0]],
                       [0, scale, HEIGHT / 2 - scale * h / 2 + shift[1]]], dtype=np.float64)
    return cv2.warpAffine(image.astype(np.float32), matrix, (WIDTH, HEIGHT), flags=cv2.INTER_AREA
                          if scale < 1 else cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def _degrade(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-frame noise and JPEG re-encoding of a float32 BGR 0..255 frame -> uint8 BGR."""
    noisy = np.clip(frame + rng.normal(0, NOISE * 255, frame.shape), 0, 255).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def _open_mouth(frame: np.ndarray, centre: tuple[float, float], amount: float) -> np.ndarray:
    """The mouth around ``centre`` (x, y) stretched vertically by up to ``amount`` (0.5: 50 %), fading out over
    about a mouth's width."""
    if amount == 0:
        return frame
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    cx, cy = centre
    weight = np.exp(-(((xs - cx) / 16) ** 2 + ((ys - cy) / 11) ** 2) / 2)
    map_y = cy + (ys - cy) / (1 + amount * weight)
    return cv2.remap(frame, xs, map_y.astype(np.float32), cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def _mouth_centre(detector, frame: np.ndarray) -> tuple[float, float]:
    rgb = torch.from_numpy(cv2.cvtColor(frame.astype(np.uint8), cv2.COLOR_BGR2RGB)).permute(2, 0, 1)[None] / 255
    face = detector.detect(rgb.float())[0][0]
    (lx, ly), (rx, ry) = face.landmarks[3], face.landmarks[4]
    return (lx + rx) / 2, (ly + ry) / 2


def make_clips(detector, frames: int) -> dict[str, tuple[torch.Tensor, list[int]]]:
    """Clip name -> (frames ``[T, 3, HEIGHT, WIDTH]`` float32 RGB 0..1, the frames whose lag is measured: those
    whose window of ``temporal.WINDOW`` frames holds a change of the input face)."""
    grace = cv2.imread(str(FACES / "grace_hopper.jpg"))
    astronaut = cv2.imread(str(FACES / "astronaut.jpg"))
    rng = np.random.default_rng(0)
    still = _fit(grace)
    short = 32
    after = temporal.WINDOW

    def ramp(t: int, start: int, length: int) -> float:
        return min(max((t - start) / length, 0.0), 1.0)

    mouth = _mouth_centre(detector, still)
    opening = [ramp(t, 8, 4) - ramp(t, 24, 4) for t in range(short)]
    light = [1 - 0.25 * ramp(t, 12, 4) for t in range(short)]
    clips: dict[str, tuple[list[np.ndarray], list[int]]] = {
        "still": ([_degrade(still, rng) for _ in range(frames)], list(range(frames))),
        "pan": ([_degrade(_fit(grace, 1 + 0.004 * t, (t - short / 2, 0.3 * t)), rng) for t in range(short)],
                list(range(1, short))),
        "cut": ([_degrade(still if t < short // 2 else _fit(astronaut), rng) for t in range(short)],
                list(range(short // 2, short // 2 + after))),
        "mouth": ([_degrade(_open_mouth(still, mouth, 0.8 * a), rng) for a in opening],
                  [*range(9, 12 + after), *range(25, min(28 + after, short))]),
        "light": ([_degrade(still * k, rng) for k in light], list(range(13, 16 + after))),
    }
    return {name: (torch.from_numpy(np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in shots])).permute(0, 3, 1, 2)
                   .float().div(255), changing) for name, (shots, changing) in clips.items()}


# ---------------------------------------------------------------------------------------------------- the model
class CachedModel(torch.nn.Module):
    """A GPEN whose forward is computed once per input (its bytes): every strength restores the same crops."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model, self.cache, self.forwards = model, {}, 0
        self.config = model.config

    def estimate_memory(self, batch_size: int, dtype=None) -> int:
        return self.model.estimate_memory(batch_size, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        if key not in self.cache:
            self.cache[key] = self.model(x)
            self.forwards += x.shape[0]
        return self.cache[key].clone()


def load_model(name: str):
    if name == "compact":
        return load_gpen_file(COMPACT)
    return load_gpen(_random_state_dict(512, seed=0))


# ---------------------------------------------------------------------------------------------------- measures
def run_clip(pipeline: Pipeline, frames: torch.Tensor, chosen, strength: float, *, window: int, threshold: float,
             register: bool = True):
    """(outputs ``[T, 3, H, W]`` 0..1, masks ``[T, H, W]``, the aligned input crops ``[F, 3, S, S]``)."""
    faces = selected_faces(chosen)
    crops: list[torch.Tensor] = []
    smoothing = None if strength == 0 else temporal.TemporalFilter(strength=strength, window=window,
                                                                   threshold=threshold, register=register)
    with torch.inference_mode():
        result, _ = pipeline.restore_and_paste(frames, faces, keep_faces=False, temporal=smoothing,
                                               on_restored=lambda batch: crops.append(batch.crops))
    return result.images, result.mask, torch.cat(crops)


def flicker(outputs: torch.Tensor, masks: torch.Tensor, pairs: list[int]) -> float:
    """Mean absolute change, 8-bit levels, between frames t-1 and t for t in ``pairs``, weighted by the lower of
    the two frames' ``masks`` ``[T, H, W]``."""
    weight = torch.minimum(masks[1:], masks[:-1])[:, None]  # [T-1, 1, H, W]
    change = (outputs[1:] - outputs[:-1]).abs() * weight
    keep = torch.as_tensor([t - 1 for t in pairs])
    return float(change[keep].sum() / (3 * weight[keep].sum()) * 255)


def lag(outputs: torch.Tensor, alone: torch.Tensor, masks: torch.Tensor, frames: list[int]) -> float:
    """Mean absolute difference, 8-bit levels, from the frame-by-frame outputs on ``frames``, inside the masks."""
    keep = torch.as_tensor(frames)
    weight = masks[keep][:, None]
    return float(((outputs[keep] - alone[keep]).abs() * weight).sum() / (3 * weight.sum()) * 255)


def input_changes(crops: torch.Tensor, cut: int | None) -> torch.Tensor:
    """The ``d`` of consecutive frames as the filter sees it (``video/temporal.py``: the earlier crop registered onto
    the later one, then cell means compared) over the cells of the central half of the crop (the face), grey 0..1;
    the pair across a cut left out."""
    guides = stats_copy(crops, min(STATS_SIZE, crops.shape[-1]))  # [T, 3, g, g]
    changes = []
    for t in range(1, guides.shape[0]):
        if t == cut:
            continue
        earlier, later = guides[t - 1:t], guides[t:t + 1]
        earlier = temporal._warped(earlier, temporal._registration(temporal._grey(earlier), temporal._grey(later)))
        d = (temporal._cells(later) - temporal._cells(earlier)).abs()[0, 0]  # [c, c]
        c = d.shape[-1]
        changes.append(d[c // 4:3 * c // 4, c // 4:3 * c // 4].flatten())
    return torch.cat(changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=["compact", "full"], default=["compact", "full"])
    parser.add_argument("--frames", type=int, default=48, help="frames of the still clip (the others have 32)")
    parser.add_argument("--window", type=int, default=temporal.WINDOW)
    parser.add_argument("--threshold", type=float, default=temporal.THRESHOLD)
    parser.add_argument("--strengths", type=float, nargs="+", default=list(STRENGTHS))
    parser.add_argument("--no-register", action="store_true", help="blend the earlier frames as they are, without "
                        "laying them over the current one first")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    strengths = sorted({0.0, *args.strengths})
    detector = load_detector("yunet_opencv", weights_dir=REPO_ROOT / "tests" / "data" / "detectors")
    clips = make_clips(detector, args.frames)
    print(f"window {args.window}, threshold {args.threshold:g}{', not registered' if args.no_register else ''}; "
          f"{WIDTH}x{HEIGHT} frames, noise sigma "
          f"{NOISE * 255:g}/255 + JPEG q{JPEG_QUALITY}; flicker and lag in 8-bit levels inside the face mask")
    for name in args.models:
        started = time.perf_counter()
        model = CachedModel(load_model(name).eval())
        pipeline = Pipeline(model=model, detector=detector, options=PipelineOptions.of(track=True, scale=1))
        rows, noise = [], math.nan
        for clip, (frames, changing) in clips.items():
            cuts = video_cuts(frames, pipeline.options.video)
            chosen = pipeline.stabilise(pipeline.find(frames), cuts=cuts)
            pairs = [t for t in range(1, frames.shape[0]) if t not in cuts]
            alone, masks, crops = run_clip(pipeline, frames, chosen, 0.0, window=args.window,
                                           threshold=args.threshold)
            inside = (masks >= FACE_MASK).float()  # the restored face alone, not the frame at the mask's edge
            d = input_changes(crops, cuts[0] if cuts else None)
            quantiles = torch.quantile(d, torch.tensor([0.5, 0.9, 0.99]))
            above = float((d > args.threshold).float().mean())
            print(f"  {name:8s} {clip:6s} input d: median {quantiles[0]:.4f}, 90% {quantiles[1]:.4f}, 99% "
                  f"{quantiles[2]:.4f}, max {float(d.max()):.4f}; {above:.1%} of cells above the threshold"
                  f"{'; cuts at ' + str(list(cuts)) if cuts else ''}")
            base = flicker(alone, inside, pairs), flicker(alone, masks, pairs)
            if clip == "still":
                noise = base[0]
            for strength in strengths:
                outputs = alone if strength == 0 else run_clip(pipeline, frames, chosen, strength, window=args.window,
                                                               threshold=args.threshold,
                                                               register=not args.no_register)[0]
                f, weighted = flicker(outputs, inside, pairs), flicker(outputs, masks, pairs)
                rows.append((clip, strength, f, f / base[0], weighted / base[1], lag(outputs, alone, inside,
                                                                                     changing)))
        print(f"\nmodel {name} ({'compact 256 test vector' if name == 'compact' else 'GPEN 512 full width'}, random "
              f"weights: they exaggerate flicker); noise (still clip's flicker at strength 0): {noise:.2f} levels; "
              f"{model.forwards} forwards, {time.perf_counter() - started:.0f} s")
        print("| clip | strength | flicker | flicker / at 0 | (mask-weighted) | lag | lag / noise |")
        print("|---|---|---|---|---|---|---|")
        for clip, strength, f, ratio, weighted, g in rows:
            print(f"| {clip} | {strength:g} | {f:.2f} | {ratio:.2f} | ({weighted:.2f}) | {g:.2f} | {g / noise:.2f} |")
        print()

if __name__ == "__main__":
    main()
