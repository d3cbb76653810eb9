"""A file job's configuration, frozen and built once: the stage records (``PipelineOptions``) and the job's own
settings (inputs, output, model, device, detector, side outputs, engine). The command line builds one from its flags
(``cli.build_config``); another front end builds one directly. Nothing here reads a file or loads a model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from face_pipeline.detection import DEFAULT_DETECTOR
from face_pipeline.pipeline import PipelineOptions
from face_pipeline.restoration.routing import MAX_MODELS
from gpen_arch import CheckpointReadError
from gpen_arch.runtime.precision import choose_dtype

from .masks import MaskFiles, mask_files
from .threads import DEFAULT_THREADS, check_threads


class UsageError(Exception):
    """A job that cannot run as asked (a bad option, an unavailable device, inputs that do not fit together): the
    command line's exit status 2."""


@dataclass(frozen=True)
class RayOptions:
    """How the job is spread over Ray: the cluster (None: a local instance started for the run and stopped after
    it), the actors (one model each), what each actor reserves, images per batch, and retries of a failed batch."""

    address: str | None = None
    workers: int = 1
    gpus_per_worker: float = 0.0
    #: the CPU threads each actor computes with (PyTorch's and OpenCV's), and the CPUs it reserves: CPU pixels
    #: depend on the thread count (``threads.py``), so they are the local engine's when it uses as many (``--threads``
    #: sets both); the GPU's do not depend on it
    threads: int = DEFAULT_THREADS
    batch_size: int = 4  # images per map_batches call
    max_retries: int = 3  # restarts of a dead actor, and retries of the batch it held
    #: shipped to the workers so they import this code, when run_on_ray starts or joins Ray (None: not shipped)
    working_dir: Path | None = None
    #: called by a worker as each batch (or sequence) starts, in the worker's process (pickled to it): e.g. a fault
    #: a test injects (a worker ending itself mid-run, whose batch Ray must retry); None: nothing
    on_batch_start: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if self.workers < 1 or self.batch_size < 1 or self.max_retries < 0:
            raise ValueError(f"workers and batch_size must be at least 1 and max_retries at least 0; got "
                             f"{self.workers}, {self.batch_size}, {self.max_retries}")
        if not 0 <= self.gpus_per_worker < 1e6:
            raise ValueError(f"gpus_per_worker must be 0 or more; got {self.gpus_per_worker}")
        check_threads(self.threads)


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """One file job: what to read and where to write (``inputs``, ``output``), the stage options, the model (a path,
    or a bare file name also looked up in ``models_dir``), the device and precision ("auto" picks), the detector,
    the mask files (inpainting, region, protect), the faces file (faces given instead of detected), the side
    outputs, whether the inputs are one video's frames, whether existing outputs are replaced, the CPU threads, and
    the engine (``ray`` None: the local engine)."""

    inputs: tuple[str, ...]
    output: str
    options: PipelineOptions
    model: str
    models_dir: Path | None = None
    more_models: tuple[str, ...] = ()  # --model given more than once: the set's other models (``ModelSet``)
    device: str = "auto"
    dtype: str = "auto"
    detector: str = DEFAULT_DETECTOR
    detector_dir: str  # the detector's weights (found there, or downloaded there)
    allow_download: bool = True
    detector_max_side: int | None = None
    inpaint_masks: str | None = None
    region_masks: str | None = None  # only the faces these masks cover (masks.MaskFiles: a folder or one file)
    protect_masks: str | None = None  # pixels that keep the original
    faces: str | None = None  # a faces file: these faces instead of detected ones (given.JobFaces); None: detect
    save_json: bool = False
    save_crops: bool = False
    save_annotated: bool = False
    video_frames: bool = False
    overwrite: bool = False
    threads: int = DEFAULT_THREADS
    ray: RayOptions | None = None

    def __post_init__(self) -> None:
        check_threads(self.threads)
        if self.inpaint_masks and self.options.restore.mode != "inpaint":
            raise UsageError("--inpaint-masks is only used with --mode inpaint")
        if self.faces and self.video_frames:
            raise UsageError("--faces is for photos: --video-frames detects and tracks the faces of its frames itself")
        if self.more_models and self.options.restore.mode != "restore":
            raise UsageError(f"--model more than once (each face restored by the model of its size) is for --mode "
                             f"restore; --mode {self.options.restore.mode} takes its one generator")
        if len(self.more_models) + 1 > MAX_MODELS:
            raise UsageError(f"--model at most {MAX_MODELS} times (one model per GPEN size), got "
                             f"{len(self.more_models) + 1}")

    def masks(self) -> dict[str, MaskFiles]:
        """The mask files given, by kind (``masks.mask_files``)."""
        return mask_files(inpaint=self.inpaint_masks, region=self.region_masks, protect=self.protect_masks)

    def model_path(self) -> Path:
        """``model`` found as ``find_model`` finds it."""
        return find_model(self.model, self.models_dir)

    def model_paths(self) -> tuple[Path, ...]:
        """Every model (``model`` and ``more_models``) found as ``find_model`` finds it."""
        return tuple(find_model(value, self.models_dir) for value in (self.model, *self.more_models))

    def for_workers(self) -> JobConfig:
        """This configuration as workers elsewhere use it: every path absolute (the model found here)."""
        absolute = {name: str(Path(value).resolve()) for name in ("detector_dir", "inpaint_masks", "region_masks",
                                                                   "protect_masks", "faces", "output")
                    if (value := getattr(self, name)) is not None}
        options = self.options
        if options.paste.parsing_dir is not None:
            paste = dataclasses.replace(options.paste, parsing_dir=str(Path(options.paste.parsing_dir).resolve()))
            options = dataclasses.replace(options, paste=paste)
        paths = [str(path.resolve()) for path in self.model_paths()]
        return dataclasses.replace(self, **absolute, options=options, model=paths[0], more_models=tuple(paths[1:]))


def find_model(value: str, models_dir: Path | None) -> Path:
    """A model named ``value``: as typed when it exists or has a folder part; a bare file name not in the current
    folder is taken from ``models_dir``. ``CheckpointReadError`` naming both places when neither has it."""
    path = Path(value)
    if path.exists() or any(sep in value for sep in ("/", "\\")) or models_dir is None:
        return path
    beside = models_dir / value
    if beside.exists():
        return beside
    raise CheckpointReadError(f"checkpoint not found: {value} is neither in the current folder nor in {models_dir}; "
                              f"put the file there or give its path")


def pick_device(name: str) -> torch.device:
    """The device ``name`` ("auto": cuda, else mps, else the cpu); ``UsageError`` when it is not available."""
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
