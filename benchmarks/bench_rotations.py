"""The cost of looking for turned faces: detection with rotations none / when_missing / always.

    python benchmarks/bench_rotations.py --detector-dir ../shared/detectors --runs 5

On a photo with a face (../shared/faces/grace_hopper.jpg, 512 x 600), on the same-sized photo without one (the
lower left of the Solvay photo, chairs and shoes, resized to 512 x 600) and on the Solvay group photo (29 faces,
1328 x 568), for each --detectors. Prints the median seconds over --runs of each mode, the faces found, and the
ratio to ``none``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from face_pipeline.detection import ROTATION_MODES, detect_faces, load_detector  # noqa: E402
from face_pipeline.image import load_image  # noqa: E402


def photos(faces_dir: Path) -> dict[str, torch.Tensor]:
    hopper = load_image(faces_dir / "grace_hopper.jpg")
    solvay = load_image(faces_dir / "solvay_conference_1927.png")
    no_face = F.interpolate(solvay[:, :, 330:, :480], size=tuple(hopper.shape[-2:]), mode="bilinear",
                            antialias=True, align_corners=False).clamp(0, 1)
    return {"face (grace_hopper 512x600)": hopper, "no face (512x600)": no_face, "29 faces (solvay 1328x568)": solvay}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", nargs="+", default=["yunet_opencv", "retinaface_mobile0.25"])
    parser.add_argument("--detector-dir", default=str(REPO_ROOT.parent / "shared" / "detectors"))
    parser.add_argument("--faces-dir", default=str(REPO_ROOT.parent / "shared" / "faces"))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    images = photos(Path(args.faces_dir))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.runs} runs")
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
