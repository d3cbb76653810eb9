"""Restore the faces in images or folders with a GPEN model, without ComfyUI.

    python cli.py photo.jpg --model GPEN-BFR-2048.pth --output restored/
    python cli.py photo.jpg --model GPEN-BFR-512.pth --output photo_restored.jpg
    python cli.py photos/ --model GPEN-BFR-512.pth --output out/ --detector yunet_opencv --scale auto
    python cli.py frames/ --model GPEN-BFR-512.pth --output out/ --video-frames --scale 2
    python cli.py convert GPEN-BFR-2048.onnx GPEN-BFR-2048.safetensors   (any GPEN file, written once as .safetensors)

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
one output folder at once are refused by a lock file (.gpen-restore.lock) there. Side outputs (--save-crops,
--save-annotated, --save-json) go into the output folder, or beside a single output file in its folder. Paths are
checked with symbolic links resolved: an output or side output that would land in an input folder (a link out/sub ->
../album), side outputs in an input file's own folder (--output album/a_restored.jpg for album/a.jpg: a folder run
over album would read the crops and previews as photos; write the image into another folder), and a side output on
an output's path (an input crops/a.jpg_face0_aligned.png beside a.jpg) are refused before any work. An input
subfolder named crops or annotated is restored like any other.

Paths: every file or folder you type is used as typed (absolute, or relative to the current folder). The models live
beside this file, in the folders ComfyUI uses: --model given as a bare file name (no folder part) that is not in the
current folder is looked up in models/gpen; --detector-dir and --parsing-dir default to models/facedetection. The
default detector, yunet_opencv, ships with the pack (used when --detector-dir has no copy of its file), so it works
offline; the other detectors' weights are downloaded into --detector-dir from their official URL on first use, unless
--no-download is given.
--video-frames treats all inputs, in name order, as the frames of one video: faces are tracked across them and their
landmarks smoothed; detection runs over the whole sequence first, then frames are restored in chunks. Each restored
face is blended with the same face's restorations in the few frames before it where the face did not move or change,
against flicker (--temporal-smoothing, 0 = off).
--mode inpaint takes the damage from --inpaint-masks DIR (a mask image of the same name, white = damaged) or, without
it, expects the damage already painted white in the image, as the official demo does.
--region-masks and --protect-masks take masks as the nodes' region_mask and protect_mask inputs do: a folder of mask
images named like the inputs (a.jpg's mask may be a.png; any size, resized to the image), or one mask image for every
input. An input whose mask a folder lacks is skipped with the reason.
--faces FILE.json restores the faces it gives instead of detecting them, so faces are detected once (--save-json
writes OUTPUT/faces.json), corrected, and restored many times: the faces.json of an earlier run (edited), or a JSON
object {"a.jpg": [{"box": [x0, y0, x1, y1], "landmarks": [[x, y] x 5]}, ...], ...} naming each input by its name
relative to its input folder, or by its bare file name when one input has it; points are in image pixels, the
landmarks in the order: the eye on the image's left, the eye on the image's right, the nose, the mouth corner on the
image's left, the one on its right. Inputs the file does not list are skipped ("not in --faces FILE"; not an error),
never detected. The given faces are selected as detected ones are (--select, --max-faces, --min-face-size,
--region-masks; the file's status and reason fields are not read: delete a face to leave it out); --threshold,
--rotations and the detector do not apply. Checked before any work (exit status 2): the file's size (64 MiB at
most), its JSON (line and column), every face's box (x1 > x0, y1 > y0, overlapping the image) and its five finite
landmarks (each inside the image or outside it by at most half the face's box: a face cut by the frame). Not with
--video-frames. A faces.json fed back with the options of the run that wrote it gives the same output bytes.

Every option and every input's output is checked before the model loads; an input that cannot be used (unreadable
or damaged, beyond 16384 pixels per side or 150 megapixels (from its header: never decoded), animated or
multi-page, an output format that cannot be written, too large for --scale) is skipped with its reason and the others
go on.
A summary of restored / unchanged / skipped / failed inputs is always printed.
Exit status: 0 done; 2 usage error or an input that could not be used; 1 any other error (model or detector weights,
out of memory, a file that could not be written); 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP (each stops like Ctrl-C: the
file in flight discarded, the lock removed, the summary printed). Errors print one line, without a traceback
(--verbose adds it). A photo folder named convert is an input when --model is given (convert never takes it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import signal
import sys
import time
from pathlib import Path

from face_jobs.config import JobConfig, RayOptions, UsageError, find_model
from face_jobs.engines.ray_cluster import CONNECT_SECONDS, RayUnavailableError, require_ray
from face_jobs.run import run_job
from face_jobs.stores import is_uri, without_secrets
from face_jobs.summary import describe_failure
from face_jobs.threads import DEFAULT_THREADS, MAX_THREADS, cpu_threads
from face_jobs.writer import write_atomically
from face_pipeline.detection import DEFAULT_DETECTOR, DETECTOR_NAMES
from face_pipeline.errors import (
    FacePipelineError,
    FacesFileError,
    FileLayoutError,
    InvalidImageError,
    OutputExistsError,
    OutputWriteError,
)
from face_pipeline.fields import spec
from face_pipeline.image import MAX_SIDE
from face_pipeline.memory import is_out_of_memory
from face_pipeline.pipeline import (
    AlignOptions,
    DetectOptions,
    PasteOptions,
    PipelineOptions,
    RestoreOptions,
    VideoOptions,
)
from face_pipeline.presets import PRESETS, apply_preset
from gpen_arch import CheckpointReadError, GPENError  # noqa: F401 - CheckpointReadError: cli.resolve_model_path's
from gpen_arch.runtime.precision import DTYPES

logger = logging.getLogger("gpen.cli")
MODELS_DIR = Path(__file__).resolve().parent / "models"  # the layout of ComfyUI's models folder
DEFAULT_DETECTOR_DIR = MODELS_DIR / "facedetection"


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (python cli.py --help lists the options)\n")


#: flags that set one stage option each, flag -> (record, field name), filled by ``add_option_flag``: type, default,
#: choices, range and help come from the record's field (``fields.option``), so a new option with a flag is its
#: record field, its use, and one ``add_option_flag`` line in ``parse_args``
OPTION_FLAGS: dict[str, tuple[type, str]] = {}


def add_option_flag(parser: argparse.ArgumentParser, flag: str, record: type, name: str, **overrides) -> None:
    """``flag`` setting field ``name`` of stage record ``record``, with the field's default, type or choices, and
    help. A boolean field that is on by default takes a ``--no-...`` flag that turns it off."""
    OPTION_FLAGS[flag] = (record, name)
    default = next(f.default for f in dataclasses.fields(record) if f.name == name)
    option_spec = spec(record, name)
    kwargs: dict = {}
    if option_spec.boolean:
        kwargs = {"action": "store_false" if default else "store_true", "default": default}
    elif option_spec.choices:  # typed as text, as the user gives it (--scale 2)
        kwargs = {"choices": [str(c) for c in option_spec.choices], "default": str(default)}
    else:
        kwargs = {"type": int if option_spec.whole else float, "default": default}
    bounds = ""
    if option_spec.low is not None:
        bounds = f" ({option_spec.low:g}..{option_spec.high:g})" if option_spec.high is not None else ""
    kwargs["help"] = overrides.pop("help", option_spec.help) + bounds
    parser.add_argument(flag, dest=name, **{**kwargs, **overrides})  # args.<field name>


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files or folders (or object-store URIs: s3://bucket/prefix)")
    parser.add_argument("--model", required=True, action="append",
                        help="GPEN checkpoint (.pth/.pt/.bin/.safetensors): a path, or a bare file name in "
                             "models/gpen beside cli.py. Give it up to 4 times (models of different sizes, e.g. "
                             "GPEN-BFR-512 and GPEN-BFR-2048) to restore each face with the model that fits its "
                             "size (--model-routing)")
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
    add_option_flag(parser, "--threshold", DetectOptions, "score_threshold")
    parser.add_argument("--detector-max-side", type=int, default=None,
                        help=f"long side of the downscaled copy large images are searched on (64..{MAX_SIDE}; "
                             f"default: the detector's own); raise it to find small faces in big frames")
    add_option_flag(parser, "--rotations", DetectOptions, "rotations")
    add_option_flag(parser, "--select", DetectOptions, "select", choices=["all", "largest"])  # indices: the nodes only
    add_option_flag(parser, "--max-faces", DetectOptions, "max_faces")
    add_option_flag(parser, "--min-face-size", DetectOptions, "min_face_size")
    add_option_flag(parser, "--template", AlignOptions, "template")
    add_option_flag(parser, "--mode", RestoreOptions, "mode")
    parser.add_argument("--inpaint-masks",
                        help="--mode inpaint: folder of masks named like the inputs (white = damaged), or one mask "
                             "for all")
    parser.add_argument("--region-masks",
                        help="only the faces in the white part are restored: a folder of masks named like the inputs "
                             "(any size), or one mask for all")
    add_option_flag(parser, "--region-overlap", DetectOptions, "region_overlap")
    parser.add_argument("--faces", metavar="FILE.json",
                        help="restore these faces instead of detecting them: the faces.json --save-json writes "
                             "(edited), or {\"a.jpg\": [{\"box\": [x0, y0, x1, y1], \"landmarks\": [[x, y] x 5]}]}; "
                             "inputs it does not list are skipped (see above)")
    parser.add_argument("--protect-masks",
                        help="the white part keeps the original pixels (a hand, a microphone in front of a face): a "
                             "folder of masks named like the inputs (any size), or one mask for all")
    add_option_flag(parser, "--strength", RestoreOptions, "strength")
    add_option_flag(parser, "--mask", PasteOptions, "mask_type")
    add_option_flag(parser, "--feather", PasteOptions, "feather")
    parser.add_argument("--parsing-dir", default=str(DEFAULT_DETECTOR_DIR),
                        help="folder with parsing_parsenet.pth or parsing_bisenet.pth (default: models/facedetection "
                             "beside cli.py)")
    add_option_flag(parser, "--no-color-correction", PasteOptions, "color_correction",
                    help="keep the model's colours as they are")
    add_option_flag(parser, "--no-keep-gray", PasteOptions, "keep_gray",
                    help="let faces in black-and-white images come out in colour (by default a black-and-white image "
                         "stays black-and-white; colorize mode always keeps the colour)")
    add_option_flag(parser, "--scale", PasteOptions, "scale")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="a named set of the options below: official reproduces the official GPEN code "
                             "(FaceEnhancement.process: bilinear warps, 8-bit steps, its parse mask and blending, "
                             "scale 1, no colour correction; needs the parsing weights in --parsing-dir), "
                             "official_rect the same with the mask its post-processing gives an all-face parse (no "
                             "parser). Flags given with it override it (e.g. --preset official --scale 2); use "
                             "--dtype fp32 for the official precision. docs/official_parity.md lists every "
                             "difference from the defaults")
    add_option_flag(parser, "--fit-precision", AlignOptions, "fit_precision")
    add_option_flag(parser, "--crop-interpolation", AlignOptions, "crop_interpolation")
    add_option_flag(parser, "--round-crops", AlignOptions, "round_crops")
    add_option_flag(parser, "--truncate-restored", RestoreOptions, "truncate_restored")
    add_option_flag(parser, "--paste-interpolation", PasteOptions, "paste_interpolation")
    add_option_flag(parser, "--round-pasted", PasteOptions, "round_pasted")
    add_option_flag(parser, "--small-face-blur", PasteOptions, "small_face_blur")
    add_option_flag(parser, "--round-output", PasteOptions, "round_output")
    add_option_flag(parser, "--max-output-size", PasteOptions, "max_output_size",
                    help="cap of the output's long side: auto picks a scale within it, an explicit scale beyond it "
                         "skips that input")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    parser.add_argument("--dtype", choices=["auto", *DTYPES], default="auto",
                        help="model precision (auto: fp16 on cuda/mps, fp32 on the cpu)")
    add_option_flag(parser, "--batch-size", RestoreOptions, "batch_size")
    add_option_flag(parser, "--model-routing", RestoreOptions, "model_routing")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help=f"CPU threads this run computes with (PyTorch and OpenCV; 1..{MAX_THREADS}, default "
                             f"%(default)s), and with --engine ray those of each worker, which reserves as many CPUs: "
                             f"on the CPU the pixels depend on it (a few values, by a few levels), so both engines "
                             f"give the same bytes with the same count; on a GPU they do not")
    parser.add_argument("--save-annotated", action="store_true",
                        help="also save each input with its faces drawn (box, index, score, track) as "
                             "OUTPUT/annotated/<input name>.png (for an output file: beside it)")
    parser.add_argument("--save-json", action="store_true",
                        help="also write OUTPUT/faces.json: every face found, where, and restored or skipped and why")
    parser.add_argument("--save-crops", action="store_true",
                        help="also save the aligned and restored crops under OUTPUT/crops/ (named after the input "
                             "file, extension included)")
    parser.add_argument("--video-frames", action="store_true",
                        help="the inputs are the ordered frames of one video: track faces (never across a scene "
                             "cut), fill in a face missed for up to --fill-gaps frames, smooth landmarks")
    add_option_flag(parser, "--fill-gaps", VideoOptions, "fill_gaps",
                    help="--video-frames: a face missed for at most this many frames between two frames where it "
                         "was found is filled in and restored there too (0 = off; default %(default)s)")
    add_option_flag(parser, "--temporal-smoothing", VideoOptions, "temporal_smoothing",
                    help="--video-frames: blend each restored face with those of the same face in the few frames "
                         "before it, where the input face did not change, against flicker (0 = off: each frame "
                         "restored alone; default %(default)s)")
    parser.add_argument("--verbose", "-v", action="store_true", help="log every step (and tracebacks)")
    engine = parser.add_argument_group("engine", "--engine ray spreads the images over Ray Data workers (one model "
                                       "each), on a local Ray instance or a cluster; needs pip install \"ray[data]\"")
    engine.add_argument("--engine", choices=["local", "ray"], default="local", help="where the work runs")
    engine.add_argument("--ray-address", help=f"Ray cluster to join (e.g. auto on a node of it, or host:port: "
                                              f"nothing answering there within {CONNECT_SECONDS:g} s is an error; "
                                              f"default: start a local instance for this run)")
    engine.add_argument("--workers", type=int, default=None, help="Ray workers, each with its own model (default 1)")
    engine.add_argument("--gpus-per-worker", type=float, default=None, help="GPUs each Ray worker reserves (0..8; "
                                                                            "default 0, 1 usual on a GPU cluster)")
    engine.add_argument("--ray-batch-size", type=int, default=None,
                        help="images per Ray batch, the unit of work that is retried (default 4)")
    args = parser.parse_args(argv)
    # the stage options given on the command line (they override --preset): parsed again without their defaults
    dests = {name for _, name in OPTION_FLAGS.values()}
    not_given = object()
    parser.set_defaults(**dict.fromkeys(dests, not_given))
    probe = vars(parser.parse_args(argv))
    args.given_options = frozenset(name for name in dests if probe[name] is not not_given)
    return args


# ------------------------------------------------------------------------------------------ checks before any work
def _in_range(name: str, value: float | None, low: float, high: float | None, what: str = "a number") -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        bounds = f"in {low:g}..{high:g}" if high is not None else f"at least {low:g}"
        raise UsageError(f"{name} must be {what} {bounds}, got {value:g}")


def check_args(args: argparse.Namespace) -> None:
    """The flags that set no stage option in their range (NaN and inf refused), and the option combinations;
    ``UsageError``. The stage options' ranges are their records' to check (``build_options``), but for the 0 that
    PasteOptions takes as "the default" (a node widget's value), which the flag refuses as out of its range."""
    if args.max_output_size == 0:
        raise UsageError(_flag_error("max_output_size must be a whole number", {"max_output_size": 0}))
    _in_range("--detector-max-side", args.detector_max_side, 64, MAX_SIDE, "a whole number")
    _in_range("--threads", args.threads, 1, MAX_THREADS, "a whole number")
    if args.inpaint_masks and args.mode != "inpaint":
        raise UsageError("--inpaint-masks is only used with --mode inpaint")
    for flag, path in (("--inpaint-masks", args.inpaint_masks), ("--region-masks", args.region_masks),
                       ("--protect-masks", args.protect_masks)):
        if path and not Path(path).exists():
            raise UsageError(f"{flag} {path}: no such folder or file")
    if "temporal_smoothing" in getattr(args, "given_options", ()) and not args.video_frames:
        raise UsageError("--temporal-smoothing smooths faces across the frames of a video: it needs --video-frames")
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
    return find_model(value, MODELS_DIR / "gpen")


def build_options(args: argparse.Namespace) -> PipelineOptions:
    """The stage records the flags set, over ``--preset`` (flags given override it); a value a record refuses is a
    ``UsageError`` naming its flag."""
    values = {name: getattr(args, name) for _, name in OPTION_FLAGS.values()}
    values["scale"] = args.scale if args.scale == "auto" else int(args.scale)
    try:
        options = PipelineOptions.of(**values, parsing_dir=args.parsing_dir, track=args.video_frames)
        return apply_preset(options, getattr(args, "preset", None), keep=getattr(args, "given_options", frozenset()))
    except ValueError as exc:
        raise UsageError(_flag_error(str(exc), values)) from exc


def _flag_error(message: str, values: dict) -> str:
    """A record's error about one of its fields (``fields.check_value``: "feather must be ...") said about the flag
    that set it, with the flag's range ("--feather must be a number in 0..0.5, got 0.9"); a record's own rule
    ("score_threshold must be 0 ... or from 0.3 to 1") with the flag's name; other errors as they are."""
    for flag, (record, name) in OPTION_FLAGS.items():
        if not message.startswith(f"{name} must be "):
            continue
        bounds = spec(record, name)
        if bounds.low is not None and message.startswith((f"{name} must be a number", f"{name} must be a whole")):
            what = "a whole number" if bounds.whole else "a number"
            within = f"in {bounds.low:g}..{bounds.high:g}" if bounds.high is not None else f"at least {bounds.low:g}"
            return f"{flag} must be {what} {within}, got {values[name]:g}"
        return flag + message[len(name):]
    return message


def build_config(args: argparse.Namespace) -> JobConfig:
    """The job the flags describe (the flags checked first: ``check_args``)."""
    ray = None
    if args.engine == "ray":
        ray = RayOptions(address=args.ray_address, workers=args.workers or 1,
                         gpus_per_worker=args.gpus_per_worker or 0.0, threads=args.threads,
                         batch_size=args.ray_batch_size or 4, working_dir=Path(__file__).resolve().parent)
    return JobConfig(inputs=tuple(args.inputs), output=args.output, options=build_options(args), model=args.model[0],
                     more_models=tuple(args.model[1:]),
                     models_dir=MODELS_DIR / "gpen", device=args.device, dtype=args.dtype, detector=args.detector,
                     detector_dir=args.detector_dir, allow_download=not args.no_download,
                     detector_max_side=args.detector_max_side, inpaint_masks=args.inpaint_masks,
                     region_masks=args.region_masks, protect_masks=args.protect_masks, faces=args.faces,
                     save_json=args.save_json, save_crops=args.save_crops, save_annotated=args.save_annotated,
                     video_frames=args.video_frames, overwrite=args.overwrite, threads=args.threads, ray=ray)


def run(args: argparse.Namespace) -> int:
    check_args(args)
    return run_job(build_config(args))


class WithoutSecrets(logging.Filter):
    """A log handler's filter that leaves the secrets of ``uris`` out of every record it passes, its traceback
    included (``stores.without_secrets``): the inputs typed may be URIs with credentials."""

    def __init__(self, uris: tuple[str, ...]) -> None:
        super().__init__()
        self.uris = uris

    def filter(self, record: logging.LogRecord) -> bool:
        if self.uris:
            record.msg, record.args = without_secrets(record.getMessage(), *self.uris), None
            if record.exc_info:
                record.exc_text = without_secrets(logging.Formatter().formatException(record.exc_info), *self.uris)
                record.exc_info = None
        return True


@contextlib.contextmanager
def logs_without_secrets(uris: tuple[str, ...]):
    """``with logs_without_secrets(uris):`` the root logger's handlers pass ``WithoutSecrets(uris)`` for the block."""
    handlers = list(logging.getLogger().handlers)
    secrets = WithoutSecrets(uris)
    for handler in handlers:
        handler.addFilter(secrets)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(secrets)


def fail(exc: BaseException, status: int, prefix: str = "", *, uris: tuple[str, ...] = ()) -> int:
    """One line on stderr (the traceback only with --verbose); returns the exit status. The secrets of ``uris``
    (the inputs and output typed, some of which may be URIs with credentials) are left out of the line, whatever
    library wrote the message (``stores.without_secrets``)."""
    logger.debug("details", exc_info=exc)
    text = without_secrets(describe_failure(exc), *uris)
    print(f"error: {prefix}{text}", file=sys.stderr)
    return status


def convert_main(argv: list[str]) -> int:
    """``cli.py convert IN OUT.safetensors [--overwrite]``: any GPEN file this pack reads (.onnx included) written
    once as a .safetensors state dict in the released key layout."""
    from gpen_arch.formats.convert import ConversionError, convert_to_safetensors

    parser = argparse.ArgumentParser(prog="cli.py convert", description=convert_main.__doc__)
    parser.add_argument("source", help="GPEN file (.onnx, .pth, .pt, .bin or .safetensors)")
    parser.add_argument("destination", help="the .safetensors file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace DESTINATION if it exists")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    def write(path: Path, data: bytes) -> None:  # the jobs' atomic writer: temporary file + rename
        try:
            write_atomically(path, data, overwrite=args.overwrite)
        except OutputExistsError as exc:  # appeared while converting
            raise ConversionError(f"{path} already exists; pass --overwrite to replace it") from exc

    try:
        config = convert_to_safetensors(args.source, args.destination, write=write, overwrite=args.overwrite)
    except ConversionError as exc:
        return fail(exc, 2)
    except (GPENError, OSError, OutputWriteError) as exc:
        return fail(exc, 1)
    print(f"{args.source} -> {args.destination}: GPEN-{config.size} (channel_multiplier "
          f"{config.channel_multiplier}, narrow {config.narrow:g}) in {time.perf_counter() - start:.1f} s")
    return 0


class Terminated(BaseException):
    """SIGTERM or SIGHUP (docker or systemd stopping the run, ``timeout``, a closed terminal): raised in the main
    thread to stop the run as Ctrl-C does (the file in flight discarded, the lock removed, the summary printed)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, _frame) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def stopping_on_signals():
    """``with stopping_on_signals():`` SIGTERM and SIGHUP raise ``Terminated`` in the main thread for the block (the
    previous handlers are restored after it); elsewhere than the main thread it changes nothing."""
    wanted = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {}
    try:
        for signum in wanted:
            previous[signum] = signal.signal(signum, _terminate)
    except ValueError:  # not the main thread: signals are the host program's
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def is_convert(argv: list[str]) -> bool:
    """Whether the command line is ``convert IN OUT``: its first word, and no ``--model`` (which a restore always has
    and convert never takes), so a photo folder named ``convert`` is an input (``cli.py convert --model ...``)."""
    return argv[:1] == ["convert"] and not any(a == "--model" or a.startswith("--model=") for a in argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if is_convert(argv):  # python cli.py convert IN.onnx OUT.safetensors
        return convert_main(argv[1:])
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:  # OpenCV's own notices (e.g. the DNN engine's target warning) would clutter the output
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    uris = tuple(value for value in (*args.inputs, args.output) if is_uri(value))
    with logs_without_secrets(uris):  # the tracebacks logged by fail too
        try:
            with stopping_on_signals(), computing_threads(args):
                return run(args)
        except (UsageError, FileLayoutError, InvalidImageError, FacesFileError) as exc:
            return fail(exc, 2, uris=uris)
        except (GPENError, FacePipelineError, OSError, MemoryError) as exc:
            return fail(exc, 1, uris=uris)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Terminated as stop:
            print(f"stopped by {signal.Signals(stop.signum).name}", file=sys.stderr)
            return 128 + stop.signum
        except Exception as exc:  # noqa: BLE001 - the last resort of a command line: one line, the traceback with -v
            if is_out_of_memory(exc):
                return fail(exc, 1, uris=uris)
            return fail(exc, 1, prefix=f"unexpected {type(exc).__name__} (--verbose shows where): ", uris=uris)


if __name__ == "__main__":
    sys.exit(main())
