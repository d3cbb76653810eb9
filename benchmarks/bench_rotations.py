"""The cost of looking for turned faces: detection with rotations none / when_missing / always.

    python benchmarks/bench_rotations.py --detector-dir ../shared/detectors --runs 5
    python benchmarks/bench_rotations.py --detector-dir ../shared/detectors --check-cost --runs 21
    python benchmarks/bench_rotations.py --detector-dir ../shared/detectors --orientations

On a photo with a face (../shared/faces/grace_hopper.jpg, 512 x 600), on the same-sized photo without one (the
lower left of the Solvay photo, chairs and shoes, resized to 512 x 600) and on the Solvay group photo (29 faces,
1328 x 568), for each --detectors. Prints the median seconds over --runs of each mode, the faces found, and the
ratio to ``none``.

``--check-cost``: the default (``when_missing``) with and without its check of the most confident face
(``rotations.looks_turned``, replaced by a no-op for "without"), runs alternating, on the upright photos (the four
shared portraits and the Solvay photo): the median of each and their ratio. ``--orientations``: the four photos
turned by 0, 90, 180 and 270 degrees, detected with the default; for each, the faces found and how many of them
come out the right way up (found at the angle that undoes the turn), with and without the check.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from face_pipeline.detection import ROTATION_MODES, detect_faces, load_detector  # noqa: E402
from face_pipeline.detection import rotations as rotations_module  # noqa: E402
from face_pipeline.image import load_image  # noqa: E402

PORTRAITS = ("grace_hopper.jpg", "astronaut.png", "pexels_woman_large_face.jpeg", "solvay_conference_1927.png")


def photos(faces_dir: Path) -> dict[str, torch.Tensor]:
    hopper = load_image(faces_dir / "grace_hopper.jpg")
    solvay = load_image(faces_dir / "solvay_conference_1927.png")
    no_face = F.interpolate(solvay[:, :, 330:, :480], size=tuple(hopper.shape[-2:]), mode="bilinear",
                            antialias=True, align_corners=False).clamp(0, 1)
    return {"face (grace_hopper 512x600)": hopper, "no face (512x600)": no_face, "29 faces (solvay 1328x568)": solvay}


@contextlib.contextmanager
def without_check(active: bool = True):
    """``detect_faces`` as before the check of the most confident face (``looks_turned`` answers "upright")."""
    real = rotations_module.looks_turned
    if active:
        rotations_module.looks_turned = lambda *args, **kwargs: []
    try:
        yield
    finally:
        rotations_module.looks_turned = real


def check_cost(detector, name: str, faces_dir: Path, runs: int) -> None:
    for photo in PORTRAITS:
        image = load_image(faces_dir / photo)
        detect_faces(detector, image)  # warm-up
        times: dict[bool, list[float]] = {False: [], True: []}
        for run in range(2 * runs):
            off = run % 2 == 1  # alternating: with, without, with, ...
            with without_check(off):
                start = time.perf_counter()
                detect_faces(detector, image)
                times[off].append(time.perf_counter() - start)
        with_check, before = statistics.median(times[False]), statistics.median(times[True])
        print(f"{name:22s} {photo:30s} {image.shape[-1]}x{image.shape[-2]}: without the check {before * 1000:7.1f} ms, "
              f"with it {with_check * 1000:7.1f} ms ({with_check / before:.2f}x)")


def orientations(detector, name: str, faces_dir: Path) -> None:
    for photo in PORTRAITS:
        image = load_image(faces_dir / photo)
        cells = []
        for k in range(4):
            turned = torch.rot90(image, k, dims=(-2, -1))  # counter-clockwise: undone by a turn of 360 - 90 k
            want = (360 - 90 * k) % 360
            counts = []
            for off in (True, False):
                with without_check(off):
                    faces = detect_faces(detector, turned)[0]
                counts.append(f"{sum(f.rotation == want for f in faces)}/{len(faces)}")
            cells.append(f"{90 * k:3d} deg {counts[0]:>5s} -> {counts[1]:>5s}")
        print(f"{name:22s} {photo:30s} " + " | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", nargs="+", default=["yunet_opencv", "retinaface_mobile0.25"])
    parser.add_argument("--detector-dir", default=str(REPO_ROOT.parent / "shared" / "detectors"))
    parser.add_argument("--faces-dir", default=str(REPO_ROOT.parent / "shared" / "faces"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--check-cost", action="store_true", help="the default with and without its check")
    parser.add_argument("--orientations", action="store_true", help="faces the right way up, photos turned")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.runs} runs")
    if args.check_cost or args.orientations:
        for name in args.detectors:
            detector = load_detector(name, weights_dir=args.detector_dir)
            if args.orientations:
                print("faces the right way up / found, without the check -> with it")
                orientations(detector, name, Path(args.faces_dir))
            if args.check_cost:
                check_cost(detector, name, Path(args.faces_dir), args.runs)
        return
    images = photos(Path(args.faces_dir))
    for name in args.detectors:
        detector = load_detector(name, weights_dir=args.detector_dir)
        for label, image in images.items():
            detect_faces(detector, image, rotations="always")  # warm-up
            base = None
            cells = []
            for mode in ROTATION_MODES:
                times, found = [], 0
                for _ in range(args.runs):
                    start = time.perf_counter()
                    found = len(detect_faces(detector, image, rotations=mode)[0])
                    times.append(time.perf_counter() - start)
                seconds = statistics.median(times)
                base = seconds if base is None else base
                cells.append(f"{mode} {seconds * 1000:7.1f} ms ({seconds / base:4.1f}x, {found} faces)")
            print(f"{name:22s} {label:27s} " + " | ".join(cells))


if __name__ == "__main__":
    main()
