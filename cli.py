"""Restore the faces in images or folders with a GPEN model, without ComfyUI.

    python cli.py photo.jpg --model models/gpen/GPEN-BFR-2048.pth --output restored/
    python cli.py frames/ --model GPEN-BFR-512.pth --output out/ --video-frames --scale 2

Output files keep the input names. Detector weights are looked up in --detector-dir (default: models/facedetection
beside this file) and downloaded there only when allowed (not with --no-download).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from face_pipeline.detection import DETECTOR_NAMES, load_detector
from face_pipeline.errors import FacePipelineError
from face_pipeline.image import IMAGE_SUFFIXES, load_image, save_image
from face_pipeline.paste import MASK_TYPES
from face_pipeline.pipeline import PipelineOptions, run_pipeline
from face_pipeline.restoration import RESTORE_MODES
from gpen_arch import GPENError, load_gpen_file

logger = logging.getLogger("gpen.cli")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEFAULT_DETECTOR_DIR = Path(__file__).resolve().parent / "models" / "facedetection"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files or folders (folders: their images, one level deep)")
    parser.add_argument("--model", required=True, help="GPEN checkpoint (.pth/.pt/.bin/.safetensors)")
    parser.add_argument("--output", required=True, help="output folder (created if needed)")
    parser.add_argument("--detector", choices=DETECTOR_NAMES, default="retinaface_resnet50")
    parser.add_argument("--detector-dir", default=str(DEFAULT_DETECTOR_DIR), help="folder of detector weights")
    parser.add_argument("--no-download", action="store_true", help="never download detector weights")
    parser.add_argument("--scale", choices=["1", "2", "4", "auto"], default="1", help="output scale")
    parser.add_argument("--max-output-size", type=int, default=8192, help="cap of the output's long side (auto)")
    parser.add_argument("--strength", type=float, default=1.0, help="blend of restored (1) and original (0)")
    parser.add_argument("--template", choices=["gpen", "ffhq"], default="gpen")
    parser.add_argument("--mode", choices=RESTORE_MODES, default="restore")
    parser.add_argument("--mask", choices=MASK_TYPES, default="rounded_rect")
    parser.add_argument("--feather", type=float, default=0.1, help="mask feather, a fraction of the face size")
    parser.add_argument("--parsing-dir", help="folder with parsing_parsenet.pth or parsing_bisenet.pth")
    parser.add_argument("--no-color-correction", action="store_true")
    parser.add_argument("--select", choices=["all", "largest"], default="all")
    parser.add_argument("--max-faces", type=int, default=0, help="0 = no limit")
    parser.add_argument("--min-face-size", type=float, default=0.0, help="in pixels")
    parser.add_argument("--threshold", type=float, default=None, help="detection score threshold")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    parser.add_argument("--dtype", choices=["auto", *DTYPES], default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="faces per forward (default: from memory)")
    parser.add_argument("--save-crops", action="store_true", help="also save aligned and restored crops")
    parser.add_argument("--video-frames", action="store_true",
                        help="treat the inputs as ordered frames of one video: track faces, smooth landmarks")
    parser.add_argument("--verbose", "-v", action="store_true")
    return parser.parse_args(argv)


def collect_inputs(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"input not found: {path}")
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(inputs)}")
    return files


def pick_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name != "auto":
        return DTYPES[name]
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def save_crops(batch, group: list[Path], folder: Path) -> None:
    """``<name>_face<k>_aligned.png`` and ``_restored.png`` for every face of ``group``."""
    counters: dict[int, int] = {}
    for face, crop, restored in zip(batch.faces, batch.crops, batch.restored):
        k = counters[face.image_index] = counters.get(face.image_index, -1) + 1
        stem = group[face.image_index].stem
        save_image(crop, folder / f"{stem}_face{k}_aligned.png")
        save_image(restored, folder / f"{stem}_face{k}_restored.png")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    files = collect_inputs(args.inputs)
    device = pick_device(args.device)
    model = load_gpen_file(args.model, device=device, dtype=pick_dtype(args.dtype, device))
    detector = load_detector(args.detector, weights_dir=args.detector_dir, allow_download=not args.no_download,
                             device=device)
    options = PipelineOptions(
        score_threshold=args.threshold, select=args.select, min_face_size=args.min_face_size,
        max_faces=args.max_faces, template=args.template, mode=args.mode, strength=args.strength,
        mask_type=args.mask, feather=args.feather, color_correction=not args.no_color_correction,
        scale=args.scale if args.scale == "auto" else int(args.scale), max_output_size=args.max_output_size,
        parsing_dir=args.parsing_dir, track=args.video_frames, batch_size=args.batch_size,
    )
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    found = restored = 0
    # video frames of one size go through together (tracking needs the sequence); photos one by one
    groups = [files] if args.video_frames else [[f] for f in files]
    with tqdm(total=len(files), unit="image", disable=None) as bar:
        for group in groups:
            images = [load_image(f) for f in group]
            if len({tuple(i.shape) for i in images}) > 1:
                raise FacePipelineError("--video-frames needs frames of one size")
            batch = torch.cat(images).to(device)
            result, report = run_pipeline(batch, model=model, detector=detector, options=options)
            found += report.faces_found
            restored += report.faces_restored
            for path, image in zip(group, result.images):
                save_image(image, output / path.name)
            if args.save_crops:
                save_crops(report.faces, group, output / "crops")
            bar.update(len(group))
    seconds = time.perf_counter() - start
    print(f"{len(files)} image(s), {found} face(s) found, {restored} restored, {seconds:.1f} s -> {output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return run(args)
    except (GPENError, FacePipelineError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
