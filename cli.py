"""Restore the faces in images or folders with a GPEN model, without ComfyUI.

    python cli.py photo.jpg --model GPEN-BFR-2048.pth --output restored/
    python cli.py photo.jpg --model GPEN-BFR-512.pth --output photo_restored.jpg
    python cli.py photos/ --model GPEN-BFR-512.pth --output out/ --detector yunet_opencv --scale auto
    python cli.py frames/ --model GPEN-BFR-512.pth --output out/ --video-frames --scale 2

Inputs: image files and folders (a folder's images and those of its direct subfolders; .png .jpg .jpeg .webp .bmp
.tif .tiff), or the same in an object store (s3://bucket/prefix, gs://...: README "Many machines"). Output files
keep the input's name and extension (and subfolder) under --output; for a single input, --output may name the image
file to write instead. They are 8-bit (a 16-bit input gives an 8-bit output) and keep
what the input carries: transparency (PNG, WEBP, TIFF; a warning where the output format cannot hold it), EXIF (the
orientation applied to the pixels) and the ICC profile (JPEG, PNG, WEBP, TIFF); a CMYK input is converted to sRGB
through its embedded profile and written untagged (without a profile: plainly). An image without a face is copied
byte for byte (at scale 1, to the same format). Still images only: an animated WEBP/PNG/GIF or a multi-page TIFF is
skipped with its frame or page count (extract the frames, e.g. magick in.webp -coalesce frames/%05d.png or ffmpeg -i
in.png frames/%05d.png, and restore them with --video-frames).

Writing is safe: every file is written under a temporary name and renamed into place, so nothing partial is left
(the temporary files of a run killed midway are removed by the next run into that folder), with the mode the umask
gives. A run that failed or was killed is finished by running the same command again: the images written are skipped,
and what they lack is completed (--save-json's faces.json, merged; --save-crops' crops).
An output file that exists is NOT replaced: that input is skipped and reported (--overwrite replaces it). An output
that would land on an input, or an output folder inside an input folder, is refused before any work; two runs into
one output folder at once are refused by a lock file (.gpen-restore.lock) there.

Paths: every file or folder you type is used as typed (absolute, or relative to the current folder). The models live
beside this file, in the folders ComfyUI uses: --model given as a bare file name (no folder part) that is not in the
current folder is looked up in models/gpen; --detector-dir and --parsing-dir default to models/facedetection. The
default detector, yunet_opencv, ships with the pack (used when --detector-dir has no copy of its file), so it works
offline; the other detectors' weights are downloaded into --detector-dir from their official URL on first use, unless
--no-download is given.
--video-frames treats all inputs, in name order, as the frames of one video: faces are tracked across them and their
landmarks smoothed; detection runs over the whole sequence first, then frames are restored in chunks.
--mode inpaint takes the damage from --inpaint-masks DIR (a mask image of the same name, white = damaged) or, without
it, expects the damage already painted white in the image, as the official demo does.

Every option and every input's output is checked before the model loads; an input that cannot be used (unreadable
or damaged, beyond 16384 pixels per side or 150 megapixels (from its header: never decoded), animated or
multi-page, an output format that cannot be written, too large for --scale) is skipped with its reason and the others
go on.
A summary of restored / unchanged / skipped / failed inputs is always printed.
Exit status: 0 done; 2 usage error or an input that could not be used; 1 any other error (model or detector weights,
out of memory, a file that could not be written). Errors print one line, without a traceback (--verbose adds it).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from face_pipeline.annotate import annotate_faces
from face_pipeline.detection import (
    DEFAULT_DETECTOR,
    DETECTOR_NAMES,
    load_detector,
)
from face_pipeline.errors import (
    FacePipelineError,
    FileLayoutError,
    InvalidImageError,
)
from face_pipeline.face_report import faces_json, faces_report
from face_pipeline.fields import spec
from face_pipeline.files import (
    JobSummary,
    Outcome,
    OutputLock,
    OutputPlan,
    PendingWrite,
    PlannedOutput,
    collect_inputs,
    describe_failure,
    describe_os_error,
    is_out_of_memory,
    is_uri,
    plan_outputs,
    run_each,
    source_size,
    staged,
    write_atomically,
)
from face_pipeline.files.job import RECOVERABLE
from face_pipeline.files.threads import DEFAULT_THREADS, MAX_THREADS, cpu_threads
from face_pipeline.files.sides import (
    FACES_JSON,
    lacking_sides,
    merge_records,
    read_records,
)
from face_pipeline.files.writer import process_umask
from face_pipeline.image import (
    IMAGE_SUFFIXES,
    MAX_SIDE,
    ImageFile,
    apply_budget_to_pillow,
    encode_image,
    load_image,
    read_image,
    same_format,
)
from face_pipeline.paste.parsing import load_parsing_net
from face_pipeline.pipeline import (
    AlignOptions,
    DetectOptions,
    PasteOptions,
    Pipeline,
    PipelineOptions,
    RestoreOptions,
    VideoOptions,
    selected_faces,
)
from face_pipeline.video import frame_thumbnails, scene_cuts
from gpen_arch import CheckpointReadError, GPENError, load_gpen_file
from gpen_arch.precision import DTYPES, choose_dtype

logger = logging.getLogger("gpen.cli")
MODELS_DIR = Path(__file__).resolve().parent / "models"  # the layout of ComfyUI's models folder
DEFAULT_DETECTOR_DIR = MODELS_DIR / "facedetection"
FRAMES_PER_CHUNK = 8  # --video-frames: frames restored and pasted together (memory: 8 full frames + their faces)
MAX_OUTPUT_SIDE = 4 * MAX_SIDE  # --max-output-size upper bound


class UsageError(Exception):
    """A bad command line or input: exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (python cli.py --help lists the options)\n")


#: flags that set one stage option each: type, default, choices, range and help come from the record's field
#: (``fields.option``), so a new option with a flag is its record field, its use, and one line here
OPTION_FLAGS = {
    "--threshold": (DetectOptions, "score_threshold"), "--rotations": (DetectOptions, "rotations"),
    "--select": (DetectOptions, "select"), "--max-faces": (DetectOptions, "max_faces"),
    "--min-face-size": (DetectOptions, "min_face_size"), "--template": (AlignOptions, "template"),
    "--mode": (RestoreOptions, "mode"), "--strength": (RestoreOptions, "strength"),
    "--mask": (PasteOptions, "mask_type"), "--feather": (PasteOptions, "feather"), "--scale": (PasteOptions, "scale"),
    "--max-output-size": (PasteOptions, "max_output_size"), "--batch-size": (RestoreOptions, "batch_size"),
    "--fill-gaps": (VideoOptions, "fill_gaps"),
}


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def add_option_flag(parser: argparse.ArgumentParser, flag: str, **overrides) -> None:
    """``flag`` (one of ``OPTION_FLAGS``) with the default, type or choices, and help of its stage option."""
    record, name = OPTION_FLAGS[flag]
    default = next(f.default for f in dataclasses.fields(record) if f.name == name)
    option_spec = spec(record, name)
    if option_spec.choices:  # typed as text, as the user gives it (--scale 2)
        kwargs = {"choices": [str(c) for c in option_spec.choices], "default": str(default)}
    else:
        kwargs = {"type": int if option_spec.whole else float, "default": default}
    bounds = ""
    if option_spec.low is not None:
        bounds = f" ({option_spec.low:g}..{option_spec.high:g})" if option_spec.high is not None else ""
    kwargs["help"] = option_spec.help + bounds
    parser.add_argument(flag, **{**kwargs, **overrides})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files or folders (or object-store URIs: s3://bucket/prefix)")
    parser.add_argument("--model", required=True,
                        help="GPEN checkpoint (.pth/.pt/.bin/.safetensors): a path, or a bare file name in "
                             "models/gpen beside cli.py")
    parser.add_argument("--output", required=True,
                        help="output folder (created if needed), or for a single input the image file to write")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace output files that exist (default: keep them, skip those inputs and report "
                             "them)")
    parser.add_argument("--detector", choices=DETECTOR_NAMES, default=DEFAULT_DETECTOR,
                        help="face detector (default: %(default)s, shipped with the pack; retinaface_resnet50 is the "
                             "official GPEN detector, a 104 MB download)")
    parser.add_argument("--detector-dir", default=str(DEFAULT_DETECTOR_DIR),
                        help="folder of detector weights (default: models/facedetection beside cli.py)")
    parser.add_argument("--no-download", action="store_true", help="never download detector weights")
    add_option_flag(parser, "--threshold")
    parser.add_argument("--detector-max-side", type=int, default=None,
                        help=f"long side of the downscaled copy large images are searched on (64..{MAX_SIDE}; "
                             f"default: the detector's own); raise it to find small faces in big frames")
    add_option_flag(parser, "--rotations")
    add_option_flag(parser, "--select", choices=["all", "largest"])  # indices: the nodes only
    add_option_flag(parser, "--max-faces")
    add_option_flag(parser, "--min-face-size")
    add_option_flag(parser, "--template")
    add_option_flag(parser, "--mode")
    parser.add_argument("--inpaint-masks",
                        help="--mode inpaint: folder of masks named like the inputs (white = damaged)")
    add_option_flag(parser, "--strength")
    add_option_flag(parser, "--mask")
    add_option_flag(parser, "--feather")
    parser.add_argument("--parsing-dir", default=str(DEFAULT_DETECTOR_DIR),
                        help="folder with parsing_parsenet.pth or parsing_bisenet.pth (default: models/facedetection "
                             "beside cli.py)")
    parser.add_argument("--no-color-correction", action="store_true", help="keep the model's colours as they are")
    parser.add_argument("--no-keep-gray", action="store_true",
                        help="let faces in black-and-white images come out in colour (by default a black-and-white "
                             "image stays black-and-white; colorize mode always keeps the colour)")
    add_option_flag(parser, "--scale")
    add_option_flag(parser, "--max-output-size", help=f"cap of the output's long side (64..{MAX_OUTPUT_SIDE}): auto "
                                                      f"picks a scale within it, an explicit scale beyond it skips "
                                                      f"that input")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    parser.add_argument("--dtype", choices=["auto", *DTYPES], default="auto",
                        help="model precision (auto: fp16 on cuda/mps, fp32 on the cpu)")
    add_option_flag(parser, "--batch-size")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help=f"CPU threads this run computes with (PyTorch and OpenCV; 1..{MAX_THREADS}, default "
                             f"%(default)s), and with --engine ray those of each worker, which reserves as many CPUs: "
                             f"on the CPU the pixels depend on it (a few values, by a few levels), so both engines "
                             f"give the same bytes with the same count; on a GPU they do not")
    parser.add_argument("--save-annotated", action="store_true",
                        help="also save each input with its faces drawn (box, index, score, track) as "
                             "OUTPUT/annotated/<input name>.png")
    parser.add_argument("--save-json", action="store_true",
                        help="also write OUTPUT/faces.json: every face found, where, and restored or skipped and why")
    parser.add_argument("--save-crops", action="store_true",
                        help="also save the aligned and restored crops under OUTPUT/crops/ (named after the input "
                             "file, extension included)")
    parser.add_argument("--video-frames", action="store_true",
                        help="the inputs are the ordered frames of one video: track faces (never across a scene "
                             "cut), fill in a face missed for up to --fill-gaps frames, smooth landmarks")
    add_option_flag(parser, "--fill-gaps",
                    help="--video-frames: a face missed for at most this many frames between two frames where it "
                         "was found is filled in and restored there too (0 = off; default %(default)s)")
    parser.add_argument("--verbose", "-v", action="store_true", help="log every step (and tracebacks)")
    engine = parser.add_argument_group("engine", "--engine ray spreads the images over Ray Data workers (one model "
                                       "each), on a local Ray instance or a cluster; needs pip install \"ray[data]\"")
    engine.add_argument("--engine", choices=["local", "ray"], default="local", help="where the work runs")
    engine.add_argument("--ray-address", help="Ray cluster to join (e.g. auto on a node of it; default: start a "
                                              "local instance for this run)")
    engine.add_argument("--workers", type=int, default=None, help="Ray workers, each with its own model (default 1)")
    engine.add_argument("--gpus-per-worker", type=float, default=None, help="GPUs each Ray worker reserves (0..8; "
                                                                            "default 0, 1 usual on a GPU cluster)")
    engine.add_argument("--ray-batch-size", type=int, default=None,
                        help="images per Ray batch, the unit of work that is retried (default 4)")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------ checks before any work
def _in_range(name: str, value: float | None, low: float, high: float | None, what: str = "a number") -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        bounds = f"in {low:g}..{high:g}" if high is not None else f"at least {low:g}"
        raise UsageError(f"{name} must be {what} {bounds}, got {value:g}")


def check_args(args: argparse.Namespace) -> None:
    """Every numeric option in its range (NaN and inf refused), and the option combinations; ``UsageError``."""
    for flag, (record, name) in OPTION_FLAGS.items():
        bounds = spec(record, name)
        if bounds.low is not None:  # the range of the stage option the flag sets
            _in_range(flag, getattr(args, _dest(flag)), bounds.low, bounds.high,
                      "a whole number" if bounds.whole else "a number")
    _in_range("--detector-max-side", args.detector_max_side, 64, MAX_SIDE, "a whole number")
    _in_range("--threads", args.threads, 1, MAX_THREADS, "a whole number")
    if args.inpaint_masks and args.mode != "inpaint":
        raise UsageError("--inpaint-masks is only used with --mode inpaint")
    if args.inpaint_masks and not Path(args.inpaint_masks).is_dir():
        raise UsageError(f"--inpaint-masks {args.inpaint_masks}: no such folder")
    if args.video_frames and any(map(is_uri, args.inputs)):
        raise UsageError("--video-frames reads its frames from local (or mounted) folders only; copy them there")
    check_engine_args(args)


def check_engine_args(args: argparse.Namespace) -> None:
    """The --engine ray options: in range, only with --engine ray, Ray Data installed (``UsageError``)."""
    ray_only = {"--ray-address": args.ray_address, "--workers": args.workers, "--gpus-per-worker": args.gpus_per_worker,
                "--ray-batch-size": args.ray_batch_size}
    given = [name for name, value in ray_only.items() if value is not None]
    if args.engine != "ray":
        if given:
            raise UsageError(f"{given[0]} is only used with --engine ray")
        return
    _in_range("--workers", args.workers, 1, 4096, "a whole number")
    _in_range("--gpus-per-worker", args.gpus_per_worker, 0.0, 8.0)
    _in_range("--ray-batch-size", args.ray_batch_size, 1, 1024, "a whole number")
    from face_pipeline.files.ray_engine import RayUnavailableError, require_ray

    try:
        require_ray()
    except RayUnavailableError as exc:
        raise UsageError(str(exc)) from exc


def computing_threads(args: argparse.Namespace):
    """``with computing_threads(args):`` PyTorch and OpenCV compute with --threads threads in this process (checked
    first: ``UsageError``), as each Ray worker does; the previous counts are restored afterwards."""
    _in_range("--threads", args.threads, 1, MAX_THREADS, "a whole number")
    return cpu_threads(args.threads)


def resolve_model_path(value: str) -> Path:
    """--model: a path is used as typed; a bare file name (no folder part) is taken from the current folder when it
    is there, else from models/gpen beside cli.py. Raises ``CheckpointReadError`` naming both places if neither has
    it."""
    path = Path(value)
    if path.exists() or any(sep in value for sep in ("/", "\\")):
        return path
    beside = MODELS_DIR / "gpen" / value
    if beside.exists():
        return beside
    raise CheckpointReadError(f"checkpoint not found: {value} is neither in the current folder nor in {beside.parent}; "
                              f"put the file there or give its path")


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
    return choose_dtype(name, device)  # auto: fp16 on cuda/mps, fp32 elsewhere (gpen_arch/precision.py)


def build_options(args: argparse.Namespace) -> PipelineOptions:
    try:
        values = {name: getattr(args, _dest(flag)) for flag, (_, name) in OPTION_FLAGS.items()}
        values["scale"] = args.scale if args.scale == "auto" else int(args.scale)
        return PipelineOptions.of(**values, color_correction=not args.no_color_correction,
                                  keep_gray=not args.no_keep_gray, parsing_dir=args.parsing_dir,
                                  track=args.video_frames)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def mask_path(folder: Path, relative: Path) -> Path | None:
    """The inpainting mask named like the input (any image suffix) in ``folder``, or None."""
    candidates = [folder / relative] + [(folder / relative).with_suffix(s) for s in IMAGE_SUFFIXES]
    return next((c for c in candidates if c.is_file()), None)


def probe_inputs(plan: OutputPlan, args: argparse.Namespace, options: PipelineOptions) -> OutputPlan:
    """Read every input's size from its header and skip (with the reason) those that cannot be used: unreadable,
    too large, beyond --max-output-size at the --scale chosen, without their inpainting mask. For --video-frames,
    frames of different sizes are a ``UsageError``."""
    sizes: dict[tuple[int, int], Path] = {}
    paste = options.paste
    for item in plan.todo:
        try:
            width, height = source_size(item.source)  # the image budget (image.check_budget) from the header
        except InvalidImageError as exc:
            plan = plan.skipping(item, str(exc))
            continue
        long_side = max(width, height)
        if paste.scale != "auto" and paste.scale > 1 and long_side * paste.scale > paste.max_output_size:
            plan = plan.skipping(item, f"--scale {paste.scale} would make it {long_side * paste.scale} px on its "
                                       f"long side, above --max-output-size {paste.max_output_size}; use --scale "
                                       f"auto or raise --max-output-size")
        elif args.inpaint_masks and mask_path(Path(args.inpaint_masks), item.relative) is None:
            plan = plan.skipping(item, f"no inpainting mask for {item.relative} in {args.inpaint_masks}")
        else:
            sizes.setdefault((width, height), item.source)
    if args.video_frames and len(sizes) > 1:
        (w0, h0), first = next(iter(sizes.items()))
        (w1, h1), other = list(sizes.items())[1]
        raise UsageError(f"--video-frames needs frames of one size: {other.name} is {w1}x{h1}, {first.name} "
                         f"{w0}x{h0}")
    return plan


def load_mask(folder: Path, relative: Path, shape: tuple[int, int]) -> torch.Tensor:
    """``[1, H, W]`` 0..1 inpainting mask named like the input, white = damaged."""
    path = mask_path(folder, relative)
    if path is None:
        raise InvalidImageError(f"no inpainting mask for {relative} in {folder}")
    mask = load_image(path)[:, 0]
    if tuple(mask.shape[-2:]) != shape:
        raise InvalidImageError(f"mask {path.name} is {mask.shape[-1]}x{mask.shape[-2]}, its image "
                                f"{shape[1]}x{shape[0]}")
    return mask


# ------------------------------------------------------------------------------------------------------- the job
class Job:
    """One CLI run's work: the loaded model and detector, the output plan, the summary."""

    def __init__(self, args: argparse.Namespace, plan: OutputPlan, options: PipelineOptions, summary: JobSummary,
                 *, sink: Callable[[PendingWrite], None] = PendingWrite.write):
        self.args, self.plan, self.options, self.summary = args, plan, options, summary
        self.sink = sink  # every output file goes through it: written here, or (Ray workers) handed to the driver
        apply_budget_to_pillow()  # a Ray worker's process too
        self.device = pick_device(args.device)
        self.dtype = pick_dtype(args.dtype, self.device)
        if options.paste.mask_type.startswith("parsing"):
            load_parsing_net(options.paste.parsing_dir)
        model_path = resolve_model_path(args.model)
        self.model = load_gpen_file(model_path, device=self.device, dtype=self.dtype)
        logger.info("model %s: %s on %s in %s", model_path, self.model.config, self.device, self.dtype)
        self.detector = load_detector(args.detector, weights_dir=args.detector_dir,
                                      allow_download=not args.no_download, device=self.device,
                                      max_side=args.detector_max_side)
        self.pipeline = Pipeline(model=self.model, detector=self.detector, options=options)  # the one assembly
        self.face_records: list[dict] = []  # --save-json: one record per image

    def masks(self, group: list[PlannedOutput], images: torch.Tensor) -> torch.Tensor | None:
        if self.options.restore.mode != "inpaint":
            return None
        if not self.args.inpaint_masks:  # the damage is already painted white in the images (the official demo)
            return torch.zeros((images.shape[0], 1, *images.shape[-2:]), device=images.device)
        shape = tuple(images.shape[-2:])
        folder = Path(self.args.inpaint_masks)
        return torch.cat([load_mask(folder, item.relative, shape) for item in group]).to(images.device)

    def save(self, item: PlannedOutput, image: torch.Tensor, loaded: ImageFile) -> None:
        data = encode_image(image, item.target.suffix, alpha=loaded.alpha, exif=loaded.exif,
                            icc_profile=loaded.icc_profile, name=item.target.name)
        self.sink(PendingWrite(item.target, data, overwrite=self.plan.overwrite))

    def crop_saver(self, group: list[PlannedOutput]):
        """--save-crops: ``on_restored`` for ``restore_and_paste``, writing each step's crops as they come (none are
        kept), numbered per image across the steps; None without --save-crops."""
        if not self.args.save_crops:
            return None
        return functools.partial(self.save_crops, group, counters={})

    def save_crops(self, group: list[PlannedOutput], batch, counters: dict[int, int]) -> None:
        for face, crop, restored in zip(batch.faces, batch.crops, batch.restored):
            k = counters[face.image_index] = counters.get(face.image_index, -1) + 1
            for kind, image in (("aligned", crop), ("restored", restored)):
                path = self.plan.crop_path(group[face.image_index], k, kind)
                data = encode_image(image, path.suffix, name=path.name)
                self.sink(PendingWrite(path, data, overwrite=self.plan.overwrite, keep_existing=True))

    def describe(self, group: list[PlannedOutput], choices, images: torch.Tensor, scale: int) -> list[dict]:
        """--save-annotated: each image with its faces drawn, written now; --save-json: their records, returned
        (the caller keeps them in ``face_records`` once the images are written; ``write_json`` writes them)."""
        if self.args.save_annotated and any(choices):
            for item, image in zip(group, annotate_faces(images, choices)):
                path = self.plan.root / "annotated" / item.relative.parent / f"{item.relative.name}.png"
                data = encode_image(image, path.suffix, name=path.name)
                self.sink(PendingWrite(path, data, overwrite=self.plan.overwrite, keep_existing=True))
        if not self.args.save_json:
            return []
        report = faces_report(choices, image_size=tuple(images.shape[-2:]), restored=True,
                              model_size=self.model.config.size, output_scale=scale,
                              first_image=len(self.face_records))
        return [{"file": item.relative.as_posix(), "output_scale": scale, **record}
                for item, record in zip(group, report["images"])]

    def write_json(self, earlier: dict[str, dict]) -> None:
        """OUTPUT/faces.json (--save-json): ``face_report``'s layout, one record per image with its file name: the
        ``earlier`` run's records (``sides.read_records``) with this run's merged in (``sides.merge_records``)."""
        records = merge_records(earlier, self.face_records, [item.relative.as_posix() for item in self.plan.items])
        scales = {record["output_scale"] for record in records}
        report = faces_report([], image_size=(0, 0), restored=True, model_size=self.model.config.size,
                              output_scale=scales.pop() if len(scales) == 1 else None, detector=self.args.detector,
                              rotations=self.options.detect.rotations)
        report["images"] = records
        # replaced: what it held is merged in (read under this run's lock), or --overwrite was given
        write_atomically(self.plan.root / FACES_JSON, (faces_json(report) + "\n").encode("utf-8"), overwrite=True)

    def complete_sides(self, item: PlannedOutput) -> None:
        """The side outputs an input whose output image exists lacks (``sides.lacking_sides``): its faces.json
        record (the output scale read from the output image) and its crops (its faces restored again; the output
        image is not written again)."""
        loaded = read_image(item.source)
        images = loaded.pixels.to(self.device)
        choices = self.pipeline.find(images)
        faces = selected_faces(choices)
        if self.args.save_crops and faces[0]:
            batch = self.pipeline.restore(self.pipeline.align(images, faces), inpaint_masks=self.masks([item], images))
            self.save_crops([item], batch, counters={})
        if self.args.save_json:
            width, _ = source_size(item.target)
            self.face_records += self.describe([item], choices, images, max(1, round(width / images.shape[-1])))
        logger.info("%s: wrote the side outputs an earlier run left out", item.source)

    def complete(self, lacking: list[PlannedOutput], bar) -> None:
        """``complete_sides`` of each input in ``lacking``; one that fails moves from skipped to failed in the
        summary (with its reason), the others go on."""
        for item in lacking:
            try:
                staged(self.complete_sides)(item)
            except (*RECOVERABLE, InvalidImageError, RuntimeError) as exc:
                if isinstance(exc, RuntimeError) and not is_out_of_memory(exc):
                    raise
                logger.debug("details", exc_info=exc)
                self.summary.fail_skipped(item.source, describe_failure(exc))
            bar.update(1)

    def photo(self, item: PlannedOutput) -> Outcome:
        """Restore one input and write its result (an image without a face is copied as it is where it can be).
        The side outputs (crops, annotated image) are written first and the output image last, so an output image
        that exists says its side outputs are there (``sides``); its faces.json records are kept once it is."""
        loaded = read_image(item.source)
        images = loaded.pixels.to(self.device)
        choices = self.pipeline.find(images)
        faces = selected_faces(choices)
        self.summary.faces_found += len(choices[0])
        scale = self.options.paste.scale
        if not faces[0] and scale in (1, "auto") and same_format(item.source, item.target):
            try:
                data = item.source.read_bytes()
            except OSError as exc:
                raise InvalidImageError(f"{item.source} could not be read: {describe_os_error(exc)}") from exc
            records = self.describe([item], choices, images, 1)
            self.sink(PendingWrite(item.target, data, overwrite=self.plan.overwrite))
            self.face_records += records
            logger.warning("no face in %s: copied unchanged", item.source.name)
            return Outcome.UNCHANGED
        result, _ = self.pipeline.restore_and_paste(images, faces, inpaint_masks=self.masks([item], images),
                                                    keep_faces=False, on_restored=self.crop_saver([item]))
        records = self.describe([item], choices, images,
                                result.scale if faces[0] else 1 if scale == "auto" else scale)
        self.save(item, result.images[0], loaded)
        self.face_records += records
        self.summary.faces_restored += len(faces[0])
        if not faces[0]:
            logger.warning("no face in %s: saved at scale %d, nothing restored", item.source.name, result.scale)
        return Outcome.RESTORED if faces[0] else Outcome.UNCHANGED

    def photos(self, bar) -> None:
        run_each(self.plan.todo, staged(self.photo), summary=self.summary, on_done=lambda _: bar.update(1))

    def write_frame(self, frames_done: dict, item: PlannedOutput) -> Outcome:
        image, loaded, faces = frames_done[item]
        self.save(item, image, loaded)
        return Outcome.RESTORED if faces else Outcome.UNCHANGED

    def video(self, bar) -> None:
        """All inputs as one frame sequence: detect everything, track and smooth over the whole sequence, then
        restore in chunks of ``FRAMES_PER_CHUNK`` frames (each frame is read twice; memory stays bounded). A frame
        that cannot be read, or whose output exists (without --overwrite), is skipped and left out of the sequence."""
        frames: list[PlannedOutput] = []
        faces_per_frame = []
        thumbnails = []  # for the scene cuts: no face track continues across one
        for item in self.plan.todo:
            try:
                frame = load_image(item.source).to(self.device)
            except InvalidImageError as exc:
                self.summary.record(item.source, Outcome.SKIPPED, str(exc), bad_input=True)
                bar.update(1)
                continue
            choices = self.pipeline.find(frame)
            self.summary.faces_found += len(choices[0])
            faces_per_frame += choices
            thumbnails.append(frame_thumbnails(frame))
            frames.append(item)
        cuts = scene_cuts(torch.cat(thumbnails)) if thumbnails else ()
        faces_per_frame = self.pipeline.stabilise(faces_per_frame, cuts=cuts)
        for start in range(0, len(frames), FRAMES_PER_CHUNK):
            group = frames[start:start + FRAMES_PER_CHUNK]
            try:
                loaded = [read_image(item.source) for item in group]
                images = torch.cat([one.pixels for one in loaded]).to(self.device)
                choices = [[dataclasses.replace(c, face=dataclasses.replace(c.face, image_index=i))
                            for c in faces_per_frame[start + i]] for i in range(len(group))]
                chunk = selected_faces(choices)
                result, _ = self.pipeline.restore_and_paste(images, chunk, inpaint_masks=self.masks(group, images),
                                                            keep_faces=False, on_restored=self.crop_saver(group))
            except (*RECOVERABLE, InvalidImageError, RuntimeError) as exc:
                if isinstance(exc, RuntimeError) and not is_out_of_memory(exc):
                    raise
                for item in group:
                    self.summary.record(item.source, Outcome.FAILED, describe_failure(exc))
                bar.update(len(group))
                continue
            self.summary.faces_restored += sum(len(faces) for faces in chunk)
            frames_done = {item: (image, one, len(faces))
                           for item, image, one, faces in zip(group, result.images, loaded, chunk)}
            try:  # side outputs first, as for photos: a frame written has its crops (written as they came)
                records = self.describe(group, choices, images, result.scale)
            except RECOVERABLE as exc:
                for item in group:
                    self.summary.record(item.source, Outcome.FAILED, describe_failure(exc))
                bar.update(len(group))
                continue
            run_each(group, functools.partial(self.write_frame, frames_done), summary=self.summary,
                     on_done=lambda _: bar.update(1))
            self.face_records += records


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    check_args(args)
    apply_budget_to_pillow()  # this process owns Pillow: its decompression-bomb limit is the pack's image budget
    process_umask()  # read once, before any thread writes: outputs get 0o666 less it, as any program's files
    options = build_options(args)
    if args.engine == "local":
        pick_device(args.device)  # an unavailable device is a usage error before anything is read
    inputs = collect_inputs(args.inputs)
    plan = plan_outputs(inputs, args.output, overwrite=args.overwrite,
                        also_read=[args.inpaint_masks] if args.inpaint_masks else [])
    plan = probe_inputs(plan, args, options)
    summary = JobSummary(images=len(plan.items), report=lambda line: print(line, file=sys.stderr))
    summary.skip_planned(plan.items)
    start = time.perf_counter()
    # an earlier run that failed or was killed: its faces.json records, and the side outputs its inputs lack
    earlier = read_records(plan.root / FACES_JSON, overwrite=args.overwrite) if args.save_json else {}
    lacking = [] if args.video_frames else lacking_sides(plan, earlier, save_json=args.save_json,
                                                         save_crops=args.save_crops)
    if not plan.todo and not lacking:
        print(f"{summary.line()}; nothing to do")
        return summary.exit_status
    with OutputLock(plan.root):  # a second run into this folder stops here, before loading anything
        job = Job(args, plan, options, summary) if args.engine == "local" else None  # ray: a Job per worker
        try:
            with tqdm(total=len(plan.todo) + len(lacking), unit="image", disable=None, file=sys.stderr) as bar:
                if job is None:
                    job = run_on_ray_engine(args, plan, options, summary, bar)
                else:
                    (job.video if args.video_frames else job.photos)(bar)
                job.complete(lacking, bar)
            if args.save_json:
                job.write_json(earlier)
        finally:
            print(f"{summary.line()}; {time.perf_counter() - start:.1f} s -> {plan.root}")
    return summary.exit_status


def run_on_ray_engine(args: argparse.Namespace, plan: OutputPlan, options: PipelineOptions, summary: JobSummary,
                      bar) -> Job:
    """--engine ray: each Ray worker builds this module's ``Job`` (model and detector loaded once) and runs its
    ``photo`` on the images it gets (``--video-frames``: one worker runs ``video`` on the whole sequence); the files
    it makes are written here, under this run's lock, by the same writer.
    Paths are made absolute (the workers run elsewhere). Returns the driver's ``Job`` (on the CPU) holding the
    workers' face records in input order (``write_json``)."""
    from face_pipeline.files.ray_engine import RayOptions, run_on_ray
    from face_pipeline.files.ray_sequence import run_sequence_on_ray

    # built once here, on the CPU, and dropped: the weights are checked (and the detector's fetched) with the local
    # engine's errors before any worker starts, instead of failing in every worker's constructor
    job = Job(argparse.Namespace(**{**vars(args), "device": "cpu", "dtype": "fp32"}), plan, options, summary)
    absolute = {name: str(Path(value).resolve()) for name in ("detector_dir", "inpaint_masks", "output")
                if (value := getattr(args, name)) is not None}
    absolute["model"] = str(resolve_model_path(args.model).resolve())  # a bare name: found here, in models/gpen
    worker_args = argparse.Namespace(**{**vars(args), **absolute})
    if options.paste.parsing_dir is not None:
        paste = dataclasses.replace(options.paste, parsing_dir=str(Path(options.paste.parsing_dir).resolve()))
        options = dataclasses.replace(options, paste=paste)
    ray_options = RayOptions(address=args.ray_address, workers=args.workers or 1,
                             gpus_per_worker=args.gpus_per_worker or 0.0, threads=args.threads,
                             batch_size=args.ray_batch_size or 4,
                             working_dir=Path(__file__).resolve().parent)
    # the workers import this module by name: pickled by reference, never by value from __main__
    job_class = importlib.import_module("cli").Job if __name__ == "__main__" else Job
    make_job = functools.partial(job_class, worker_args, dataclasses.replace(plan, root=plan.root.resolve(), items=()),
                                 options, JobSummary())
    run = run_sequence_on_ray if args.video_frames else run_on_ray  # a sequence: one unit of work, in order
    run(plan.todo, make_job, summary=summary, options=ray_options, on_done=lambda _: bar.update(1),
        records=job.face_records)
    return job


def fail(exc: BaseException, status: int, prefix: str = "") -> int:
    """One line on stderr (the traceback only with --verbose); returns the exit status."""
    logger.debug("details", exc_info=exc)
    text = describe_failure(exc)
    print(f"error: {prefix}{text}", file=sys.stderr)
    return status


def convert_main(argv: list[str]) -> int:
    """``cli.py convert IN OUT.safetensors [--overwrite]``: any GPEN file this pack reads (.onnx included) written
    once as a .safetensors state dict in the released key layout."""
    from gpen_arch.convert import ConversionError, convert_to_safetensors

    parser = argparse.ArgumentParser(prog="cli.py convert", description=convert_main.__doc__)
    parser.add_argument("source", help="GPEN file (.onnx, .pth, .pt, .bin or .safetensors)")
    parser.add_argument("destination", help="the .safetensors file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace DESTINATION if it exists")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        config = convert_to_safetensors(args.source, args.destination, overwrite=args.overwrite)
    except ConversionError as exc:
        return fail(exc, 2)
    except (GPENError, OSError) as exc:
        return fail(exc, 1)
    print(f"{args.source} -> {args.destination}: GPEN-{config.size} (channel_multiplier "
          f"{config.channel_multiplier}, narrow {config.narrow:g}) in {time.perf_counter() - start:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["convert"]:  # python cli.py convert IN.onnx OUT.safetensors
        return convert_main(argv[1:])
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:  # OpenCV's own notices (e.g. the DNN engine's target warning) would clutter the output
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        with computing_threads(args):
            return run(args)
    except (UsageError, FileLayoutError, InvalidImageError) as exc:
        return fail(exc, 2)
    except (GPENError, FacePipelineError, OSError, MemoryError) as exc:
        return fail(exc, 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last resort of a command line: one line, the traceback with -v
        if is_out_of_memory(exc):
            return fail(exc, 1)
        return fail(exc, 1, prefix=f"unexpected {type(exc).__name__} (--verbose shows where): ")


if __name__ == "__main__":
    sys.exit(main())
