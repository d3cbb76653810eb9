"""Restore the faces in images or folders with a GPEN model, without ComfyUI.

    python cli.py photo.jpg --model models/gpen/GPEN-BFR-2048.pth --output restored/
    python cli.py photos/ --model GPEN-BFR-512.pth --output out/ --detector yunet_opencv --scale auto
    python cli.py frames/ --model GPEN-BFR-512.pth --output out/ --video-frames --scale 2

Inputs: image files and folders (a folder's images and those of its direct subfolders; .png .jpg .jpeg .webp .bmp
.tif .tiff). Output files keep the input's name and extension (and subfolder) under --output; they are 8-bit (a 16-bit
input gives an 8-bit output). Detector weights are looked up in --detector-dir (default: models/facedetection beside
this file, the folder ComfyUI uses) and downloaded there from their official URL unless --no-download is given.
--video-frames treats all inputs, in name order, as the frames of one video: faces are tracked across them and their
landmarks smoothed; detection runs over the whole sequence first, then frames are restored in chunks.
--mode inpaint takes the damage from --inpaint-masks DIR (a mask image of the same name, white = damaged) or, without
it, expects the damage already painted white in the image, as the official demo does.

Exit status: 0 done; 2 usage error or bad input (missing or unreadable images, bad values); 1 any other error (model or
detector weights, out of memory). Known errors print one line, without a traceback (--verbose adds details).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

import torch

from face_pipeline.annotate import annotate_faces
from face_pipeline.detection import DETECTOR_NAMES, ROTATION_MODES, load_detector
from face_pipeline.errors import FacePipelineError, InvalidImageError
from face_pipeline.face_report import faces_json, faces_report
from face_pipeline.image import IMAGE_SUFFIXES, load_image, save_image
from face_pipeline.paste import MASK_TYPES
from face_pipeline.pipeline import (
    PipelineOptions,
    find_choices,
    restore_and_paste,
    selected_faces,
    stabilise_choices,
)
from face_pipeline.restoration import RESTORE_MODES
from gpen_arch import GPENError, load_gpen_file

logger = logging.getLogger("gpen.cli")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEFAULT_DETECTOR_DIR = Path(__file__).resolve().parent / "models" / "facedetection"
FRAMES_PER_CHUNK = 8  # --video-frames: frames restored and pasted together (memory: 8 full frames + their faces)


class UsageError(Exception):
    """A bad command line or input: exit status 2."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files or folders")
    parser.add_argument("--model", required=True, help="GPEN checkpoint (.pth/.pt/.bin/.safetensors)")
    parser.add_argument("--output", required=True, help="output folder (created if needed)")
    parser.add_argument("--detector", choices=DETECTOR_NAMES, default="retinaface_resnet50",
                        help="face detector (default: %(default)s, as the official GPEN pipeline)")
    parser.add_argument("--detector-dir", default=str(DEFAULT_DETECTOR_DIR),
                        help="folder of detector weights (default: models/facedetection beside cli.py)")
    parser.add_argument("--no-download", action="store_true", help="never download detector weights")
    parser.add_argument("--threshold", type=float, default=None, help="detection score threshold (0..1)")
    parser.add_argument("--detector-max-side", type=int, default=None,
                        help="long side of the downscaled copy large images are searched on (default: the "
                             "detector's own); raise it to find small faces in big frames")
    parser.add_argument("--rotations", choices=ROTATION_MODES, default="when_missing",
                        help="faces on their side or upside down: look on the image turned by 90/180/270 degrees "
                             "when no upright face is found (when_missing, default), always, or never (none)")
    parser.add_argument("--select", choices=["all", "largest"], default="all", help="faces to restore per image")
    parser.add_argument("--max-faces", type=int, default=0, help="at most this many faces per image (0 = no limit)")
    parser.add_argument("--min-face-size", type=float, default=0.0, help="skip faces smaller than this (pixels)")
    parser.add_argument("--template", choices=["gpen", "ffhq"], default="gpen", help="alignment template")
    parser.add_argument("--mode", choices=RESTORE_MODES, default="restore",
                        help="restore (GPEN-BFR), colorize (GPEN-Colorization), inpaint (GPEN-Inpainting)")
    parser.add_argument("--inpaint-masks", help="--mode inpaint: folder of masks named like the inputs (white = damaged)")
    parser.add_argument("--strength", type=float, default=1.0, help="blend of restored (1) and original (0) face")
    parser.add_argument("--mask", choices=MASK_TYPES, default="rounded_rect", help="paste mask")
    parser.add_argument("--feather", type=float, default=0.1, help="mask feather, a fraction of the face size")
    parser.add_argument("--parsing-dir", help="folder with parsing_parsenet.pth or parsing_bisenet.pth")
    parser.add_argument("--no-color-correction", action="store_true", help="keep the model's colours as they are")
    parser.add_argument("--scale", choices=["1", "2", "4", "auto"], default="1",
                        help="output scale; auto: the smallest that keeps the restored faces' detail")
    parser.add_argument("--max-output-size", type=int, default=8192, help="cap of the output's long side (auto)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    parser.add_argument("--dtype", choices=["auto", *DTYPES], default="auto",
                        help="model precision (auto: fp16 on cuda/mps, fp32 on the cpu)")
    parser.add_argument("--batch-size", type=int, default=None, help="faces per forward (default: from free memory)")
    parser.add_argument("--save-crops", action="store_true",
                        help="also save the aligned and restored crops under OUTPUT/crops/")
    parser.add_argument("--save-annotated", action="store_true",
                        help="also save each input with its faces drawn (box, index, score, track) as "
                             "OUTPUT/annotated/<input name>.png")
    parser.add_argument("--save-json", action="store_true",
                        help="also write OUTPUT/faces.json: every face found, where, and restored or skipped and why")
    parser.add_argument("--video-frames", action="store_true",
                        help="the inputs are the ordered frames of one video: track faces, smooth landmarks")
    parser.add_argument("--verbose", "-v", action="store_true", help="log every step (and tracebacks)")
    return parser.parse_args(argv)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def collect_inputs(inputs: list[str]) -> list[tuple[Path, Path]]:
    """(input file, output path relative to --output) for every image: files as they are, folders with their images
    and those of their direct subfolders (kept as subfolders of the output)."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += [(p, Path(p.name)) for p in _images_in(path)]
            for sub in sorted(p for p in path.iterdir() if p.is_dir()):
                found += [(p, Path(sub.name) / p.name) for p in _images_in(sub)]
        elif path.is_file():
            found.append((path, Path(path.name)))
        else:
            raise UsageError(f"input not found: {path}")
    if not found:
        raise UsageError(f"no images ({' '.join(IMAGE_SUFFIXES)}) in {', '.join(inputs)}")
    seen: dict[Path, Path] = {}
    for source, relative in found:
        if relative in seen:
            raise UsageError(f"{seen[relative]} and {source} would both be written as {relative}; rename one")
        seen[relative] = source
    return found


def pick_device(name: str) -> torch.device:
    if name != "auto":
        if name == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available to PyTorch here")
        if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UsageError("--device mps: MPS is not available here")
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


def build_options(args: argparse.Namespace) -> PipelineOptions:
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    try:
        return PipelineOptions(
            score_threshold=args.threshold, select=args.select, min_face_size=args.min_face_size,
            max_faces=args.max_faces, template=args.template, mode=args.mode, strength=args.strength,
            mask_type=args.mask, feather=args.feather, color_correction=not args.no_color_correction,
            scale=args.scale if args.scale == "auto" else int(args.scale), max_output_size=args.max_output_size,
            parsing_dir=args.parsing_dir, track=args.video_frames, batch_size=args.batch_size,
            rotations=args.rotations,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def load_mask(folder: Path, relative: Path, shape: tuple[int, int]) -> torch.Tensor:
    """``[1, H, W]`` 0..1 inpainting mask named like the input (any image suffix), white = damaged."""
    candidates = [folder / relative] + [(folder / relative).with_suffix(s) for s in IMAGE_SUFFIXES]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise UsageError(f"no inpainting mask for {relative} in {folder}")
    mask = load_image(path)[:, 0]
    if tuple(mask.shape[-2:]) != shape:
        raise UsageError(f"mask {path.name} is {mask.shape[-1]}x{mask.shape[-2]}, its image {shape[1]}x{shape[0]}")
    return mask


class Run:
    """One CLI run: the loaded model and detector, counters for the summary."""

    def __init__(self, args: argparse.Namespace, files: list[tuple[Path, Path]]):
        self.args, self.files = args, files
        self.options = build_options(args)
        self.output = Path(args.output)
        for source, relative in files:
            if (self.output / relative).resolve() == source.resolve():
                raise UsageError(f"--output would overwrite the input {source}; choose another folder")
        self.device = pick_device(args.device)
        self.dtype = pick_dtype(args.dtype, self.device)
        self.model = load_gpen_file(args.model, device=self.device, dtype=self.dtype)
        logger.info("model %s: %s on %s in %s", Path(args.model).name, self.model.config, self.device, self.dtype)
        self.detector = load_detector(args.detector, weights_dir=args.detector_dir,
                                      allow_download=not args.no_download, device=self.device,
                                      max_side=args.detector_max_side)
        self.found = self.restored = 0
        self.failed: list[str] = []
        self.face_records: list[dict] = []  # --save-json: one record per image written

    def masks(self, group: list[tuple[Path, Path]], images: torch.Tensor) -> torch.Tensor | None:
        if self.options.mode != "inpaint":
            return None
        if not self.args.inpaint_masks:  # the damage is already painted white in the images (the official demo)
            return torch.zeros((images.shape[0], 1, *images.shape[-2:]), device=images.device)
        shape = tuple(images.shape[-2:])
        return torch.cat([load_mask(Path(self.args.inpaint_masks), rel, shape) for _, rel in group]).to(images.device)

    def finish(self, group: list[tuple[Path, Path]], choices, images: torch.Tensor) -> None:
        """Align, restore, paste and save ``images`` (one group of inputs) with their selected faces (``choices``:
        every face found per image, ``pipeline.find_choices``)."""
        result, batch = restore_and_paste(images, selected_faces(choices), model=self.model, options=self.options,
                                          inpaint_masks=self.masks(group, images))
        self.restored += batch.num_faces
        for (source, relative), image in zip(group, result.images):
            save_image(image, self.output / relative)
        self.describe(group, choices, images, result.scale)
        if self.args.save_crops:
            counters: dict[int, int] = {}
            for face, crop, restored in zip(batch.faces, batch.crops, batch.restored):
                k = counters[face.image_index] = counters.get(face.image_index, -1) + 1
                stem = group[face.image_index][1].with_suffix("")
                save_image(crop, self.output / "crops" / f"{stem}_face{k}_aligned.png")
                save_image(restored, self.output / "crops" / f"{stem}_face{k}_restored.png")

    def describe(self, group: list[tuple[Path, Path]], choices, images: torch.Tensor, scale: int) -> None:
        """--save-annotated: each image with its faces drawn; --save-json: their records, written at the end."""
        if self.args.save_annotated:
            for (_, relative), image in zip(group, annotate_faces(images, choices)):
                save_image(image, self.output / "annotated" / relative.parent / f"{relative.name}.png")
        if self.args.save_json:
            report = faces_report(choices, image_size=tuple(images.shape[-2:]), restored=True,
                                  model_size=self.model.config.size, output_scale=scale,
                                  first_image=len(self.face_records))
            for (_, relative), record in zip(group, report["images"]):
                self.face_records.append({"file": relative.as_posix(), "output_scale": scale, **record})

    def write_json(self) -> None:
        """OUTPUT/faces.json (--save-json): ``face_report``'s layout, one record per image with its file name."""
        scales = {record["output_scale"] for record in self.face_records}
        report = faces_report([], image_size=(0, 0), restored=True, model_size=self.model.config.size,
                              output_scale=scales.pop() if len(scales) == 1 else None, detector=self.args.detector,
                              rotations=self.options.rotations)
        report["images"] = self.face_records
        self.output.mkdir(parents=True, exist_ok=True)
        (self.output / "faces.json").write_text(faces_json(report) + "\n", encoding="utf-8")

    def photos(self, bar) -> None:
        """Each input on its own; an unreadable image is reported and skipped."""
        for item in self.files:
            try:
                images = load_image(item[0]).to(self.device)
            except InvalidImageError as exc:
                logger.error("skipped: %s", exc)
                self.failed.append(str(item[0]))
                bar.update(1)
                continue
            choices = find_choices(images, detector=self.detector, options=self.options)
            self.found += len(choices[0])
            if not selected_faces(choices)[0]:
                logger.warning("no face in %s: saved unchanged", item[0].name)
            self.finish([item], choices, images)
            bar.update(1)

    def video(self, bar) -> None:
        """All inputs as one frame sequence: detect everything, track and smooth over the whole sequence, then
        restore in chunks of ``FRAMES_PER_CHUNK`` frames (each frame is read twice; memory stays bounded)."""
        shape = None
        faces_per_frame = []
        for source, _ in self.files:
            frame = load_image(source).to(self.device)
            if shape is not None and frame.shape != shape:
                raise UsageError(f"--video-frames needs frames of one size: {source.name} is "
                                 f"{frame.shape[-1]}x{frame.shape[-2]}, the first {shape[-1]}x{shape[-2]}")
            shape = frame.shape
            choices = find_choices(frame, detector=self.detector, options=self.options)
            self.found += len(choices[0])
            faces_per_frame += choices
        faces_per_frame = stabilise_choices(faces_per_frame, options=self.options)
        for start in range(0, len(self.files), FRAMES_PER_CHUNK):
            group = self.files[start:start + FRAMES_PER_CHUNK]
            images = torch.cat([load_image(source) for source, _ in group]).to(self.device)
            chunk = [[dataclasses.replace(c, face=dataclasses.replace(c.face, image_index=i))
                      for c in faces_per_frame[start + i]] for i in range(len(group))]
            self.finish(group, chunk, images)
            bar.update(len(group))


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    files = collect_inputs(args.inputs)
    if args.inpaint_masks and args.mode != "inpaint":
        raise UsageError("--inpaint-masks is only used with --mode inpaint")
    start = time.perf_counter()
    job = Run(args, files)
    with tqdm(total=len(files), unit="image", disable=None, file=sys.stderr) as bar:
        (job.video if args.video_frames else job.photos)(bar)
    if args.save_json:
        job.write_json()
    seconds = time.perf_counter() - start
    done = len(files) - len(job.failed)
    print(f"{done} image(s), {job.found} face(s) found, {job.restored} restored, {seconds:.1f} s -> {job.output}")
    if job.failed:
        print(f"{len(job.failed)} image(s) could not be read: {', '.join(job.failed)}", file=sys.stderr)
        return 2
    return 0


def fail(exc: BaseException, status: int) -> int:
    """One line on stderr (the traceback only with --verbose); returns the exit status."""
    logger.debug("details", exc_info=exc)
    text = " ".join(str(exc).split()) or type(exc).__name__
    print(f"error: {text}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:  # OpenCV's own notices (e.g. the DNN engine's target warning) would clutter the output
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        return run(args)
    except (UsageError, InvalidImageError) as exc:
        return fail(exc, 2)
    except (GPENError, FacePipelineError, OSError) as exc:
        return fail(exc, 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
