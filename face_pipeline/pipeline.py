"""The whole chain in one call: detect (batched) -> select -> track + smooth (frames) -> align -> restore -> paste.

An image batch ``[B, 3, H, W]`` is B independent photos of one size unless the caller says it is B frames of a video
in order (``PipelineOptions.track``): then faces are tracked across the batch (never across a scene cut), a face
missed for a few frames is filled in from its neighbours, and landmarks are smoothed over time so crops do not
jitter. Independent photos never influence each other: a batch gives the pixels each photo gives alone. Images
without a face come back unchanged (resized to the output scale), with a log line.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .alignment import TEMPLATES, align_faces
from .detection import ROTATION_MODES, FaceDetector, detect_faces
from .errors import InvalidImageError
from .image import FLOAT_TOLERANCE
from .memory import DEFAULT_MEMORY, MemoryPolicy
from .paste import MASK_TYPES, SCALES, paste_within_memory
from .region import MIN_OVERLAP, masks_for
from .restoration import RESTORE_MODES, model_size, restore_faces
from .selection import SELECT_MODES, SORT_ORDERS, FaceChoice, choose_faces
from .types import DetectedFace, FaceBatch, PasteResult
from .video import fill_gaps, frame_thumbnails, scene_cuts, smooth_landmarks, track_faces

logger = logging.getLogger(__name__)

DEFAULT_MAX_OUTPUT_SIZE = 8192
MIN_OUTPUT_SIZE, MAX_OUTPUT_SIZE = 64, 65536  # bounds of max_output_size (pixels of the output's long side)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_range(name: str, value, low: float, high: float | None = None, *, whole: bool = False) -> None:
    """``ValueError`` unless ``value`` is a finite number (a whole one if ``whole``) in ``low..high``."""
    kind = "a whole number" if whole else "a number"
    bounds = f"from {low:g} to {high:g}" if high is not None else f"of at least {low:g}"
    if not _is_number(value) or (whole and value != int(value)) or value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {kind} {bounds}, got {value!r}")


@dataclass(frozen=True)
class PipelineOptions:
    """Every choice of the pipeline, with the defaults a user gets. Invalid values (out of range, NaN/inf, wrong
    type) raise ``ValueError`` here, before any work starts; ``max_output_size=0`` means the default (8192)."""

    score_threshold: float | None = None  # detection score 0..1; None: the detector's own default
    rotations: str = "when_missing"  # ROTATION_MODES: also look for faces on the image turned by 90/180/270 degrees
    select: str = "all"  # SELECT_MODES: all / largest / indices
    indices: Sequence[int] = ()  # for select="indices": positions after sorting, per image (0 or more)
    sort_by: str = "area"  # SORT_ORDERS
    min_face_size: float = 0.0  # pixels (box side), 0 or more; 0 = no minimum
    max_faces: int = 0  # per image, 0 or more; 0 = no limit
    region_overlap: float = MIN_OVERLAP  # with a region mask: share of a face's box it must cover (0..1)
    template: str = "gpen"  # TEMPLATES
    mode: str = "restore"  # RESTORE_MODES
    strength: float = 1.0  # 0..1, restored vs original face
    mask_type: str = "rounded_rect"  # MASK_TYPES
    feather: float = 0.1  # 0..0.5, fraction of the face size
    color_correction: bool = True
    scale: int | str = 1  # 1, 2, 4 or "auto"
    max_output_size: int = DEFAULT_MAX_OUTPUT_SIZE  # cap of the output's long side, 64..65536; 0 = the default
    parsing_dir: str | None = None  # folder of the face-parsing weights (mask_type parsing*)
    track: bool = False  # the batch is the frames of one video: track faces, fill short gaps, smooth landmarks
    smoothing: float = 0.3  # landmark smoothing strength 0..1 (0 = off); only when tracking
    fill_gaps: int = 3  # when tracking: a face missed for at most this many frames is interpolated (0 or more)
    keep_gray: bool = True  # black-and-white images (R = G = B) stay black-and-white (not in colorize mode)
    batch_size: int | None = None  # faces per forward, 1 or more; None = from free memory

    def __post_init__(self) -> None:
        choices = (("rotations", ROTATION_MODES), ("select", SELECT_MODES), ("sort_by", SORT_ORDERS),
                   ("template", TEMPLATES), ("mode", RESTORE_MODES), ("mask_type", MASK_TYPES))
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.scale != "auto" and (isinstance(self.scale, bool) or self.scale not in SCALES):
            raise ValueError(f"scale must be one of {', '.join(map(str, SCALES))} or 'auto'; got {self.scale!r}")
        if self.score_threshold is not None:
            _check_range("score_threshold", self.score_threshold, 0.0, 1.0)
        if isinstance(self.indices, (str, bytes)) or not all(
                isinstance(i, numbers.Integral) and not isinstance(i, bool) and i >= 0 for i in self.indices):
            raise ValueError(f"indices must be whole numbers of at least 0, got {self.indices!r}")
        _check_range("min_face_size", self.min_face_size, 0.0)
        _check_range("max_faces", self.max_faces, 0, whole=True)
        _check_range("strength", self.strength, 0.0, 1.0)
        _check_range("feather", self.feather, 0.0, 0.5)
        _check_range("smoothing", self.smoothing, 0.0, 1.0)
        _check_range("fill_gaps", self.fill_gaps, 0, whole=True)
        _check_range("region_overlap", self.region_overlap, 0.0, 1.0)
        if self.max_output_size == 0:
            object.__setattr__(self, "max_output_size", DEFAULT_MAX_OUTPUT_SIZE)
        _check_range("max_output_size", self.max_output_size, MIN_OUTPUT_SIZE, MAX_OUTPUT_SIZE, whole=True)
        if self.batch_size is not None:
            _check_range("batch_size", self.batch_size, 1, whole=True)
        for name in ("color_correction", "track", "keep_gray"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.parsing_dir is not None and not isinstance(self.parsing_dir, (str, os.PathLike)):
            raise ValueError(f"parsing_dir must be a folder path or None, got {type(self.parsing_dir).__name__}")


@dataclass(frozen=True)
class PipelineReport:
    """What a run did: counts over the whole batch, wall time, and the time of each stage."""

    images: int
    faces_found: int  # detected, before selection
    faces_restored: int  # selected and restored
    seconds: float
    scale: int = 1  # the output scale used
    stage_seconds: dict = field(default_factory=dict, compare=False)  # "detect", "align", "restore", "paste"
    faces: FaceBatch | None = field(default=None, repr=False, compare=False)  # the restored batch, crops included
    choices: list | None = field(default=None, repr=False, compare=False)  # per image, every face found: FaceChoice


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        found = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InvalidImageError(f"images must be a [B, 3, H, W] tensor (RGB 0..1; see image.to_rgb_float), got {found}")
    if images.dtype not in (torch.float32, torch.float64):
        hint = " (half precision is too coarse for alignment: use images.float())" if images.is_floating_point() else ""
        raise InvalidImageError(f"images must be float32 RGB in 0..1, got {images.dtype}{hint} (see "
                                f"image.to_rgb_float)")
    if images.shape[0] == 0 or images.shape[-1] == 0 or images.shape[-2] == 0:
        raise InvalidImageError(f"the image batch is empty: {list(images.shape)}")
    low, high = torch.aminmax(images)  # one pass; NaN and inf show up in the extremes
    if not (torch.isfinite(low) and torch.isfinite(high)):
        raise InvalidImageError("the images contain NaN or infinite values")
    if low < -FLOAT_TOLERANCE or high > 1 + FLOAT_TOLERANCE:
        raise InvalidImageError(f"images must hold values in 0..1; found {low.item():.3g}..{high.item():.3g} "
                                f"(was it 0..255 or -1..1?)")


def find_choices(images: torch.Tensor, *, detector: FaceDetector, options: PipelineOptions,
                 region: torch.Tensor | None = None,
                 check_interrupt: Callable[[], None] | None = None) -> list[list[FaceChoice]]:
    """Detection (the whole batch at once, at the angles ``options.rotations`` asks for) and selection: per image,
    every face found with what selection decided (``selection.choose_faces``: the selected ones first, in restore
    order). ``region``: optional ``[N, H, W]`` 0..1 mask (one per image or one for all, any size): only faces whose
    box it covers by at least ``options.region_overlap`` are selected."""
    _check_images(images)
    masks = None
    if region is not None:  # checked before the detector runs
        masks = masks_for(region, batch=int(images.shape[0]), size=tuple(images.shape[-2:]), what="region mask")
    found = detect_faces(detector, images, rotations=options.rotations, score_threshold=options.score_threshold)
    if check_interrupt is not None:
        check_interrupt()
    chosen = choose_faces(found, mode=options.select, indices=options.indices, sort_by=options.sort_by,
                          min_size=options.min_face_size, max_faces=options.max_faces,
                          region=None if masks is None else masks.cpu(), min_overlap=options.region_overlap)
    empty = [i for i, per_image in enumerate(chosen) if not any(c.selected for c in per_image)]
    if empty:
        shown = ", ".join(map(str, empty[:20])) + (" ..." if len(empty) > 20 else "")
        logger.info("no face found in %d of %d image(s) (index %s): returned unchanged", len(empty),
                    images.shape[0], shown)
    return chosen


def selected_faces(choices: list[list[FaceChoice]]) -> list[list[DetectedFace]]:
    """The selected faces of ``find_choices``' result, per image in restore order."""
    return [[c.face for c in per_image if c.selected] for per_image in choices]


def find_faces(images: torch.Tensor, *, detector: FaceDetector, options: PipelineOptions,
               region: torch.Tensor | None = None,
               check_interrupt: Callable[[], None] | None = None) -> tuple[list[list[DetectedFace]], int]:
    """``find_choices``, shortened: the selected faces per image and the number of faces detected before
    selection."""
    chosen = find_choices(images, detector=detector, options=options, region=region, check_interrupt=check_interrupt)
    return selected_faces(chosen), sum(len(per_image) for per_image in chosen)


def stabilise_faces(faces_per_image: list[list[DetectedFace]], *, options: PipelineOptions,
                    cuts: tuple[int, ...] = ()) -> list[list[DetectedFace]]:
    """For a frame sequence (``options.track`` and more than one image): track faces by box overlap (tracks end at
    the scene ``cuts``, see ``video.scene_cuts``), fill gaps of up to ``options.fill_gaps`` frames, and smooth the
    landmarks over time (``options.smoothing``). Otherwise the faces are returned as they are."""
    if not options.track or len(faces_per_image) < 2:
        return faces_per_image
    tracked = track_faces(faces_per_image, cuts=cuts)
    tracked, filled = fill_gaps(tracked, max_gap=options.fill_gaps, cuts=cuts)
    if filled:
        logger.info("video: %d face(s) missed by the detector filled in from the frames around them", filled)
    if cuts:
        logger.info("video: %d scene cut(s) at frame %s: no face track continues across them", len(cuts),
                    ", ".join(map(str, cuts[:20])))
    return smooth_landmarks(tracked, strength=options.smoothing) if options.smoothing > 0 else tracked


def video_cuts(images: torch.Tensor, options: PipelineOptions) -> tuple[int, ...]:
    """The scene cuts of ``images`` when they are video frames (``options.track``), else none."""
    if not options.track or images.shape[0] < 2:
        return ()
    return scene_cuts(frame_thumbnails(images))


def stabilise_choices(choices: list[list[FaceChoice]], *, options: PipelineOptions,
                      cuts: tuple[int, ...] = ()) -> list[list[FaceChoice]]:
    """``stabilise_faces`` on the selected faces of ``choices`` (the others are neither tracked nor smoothed).
    Faces filled into a gap of their track come after the selected ones of their frame, selected, without index."""
    stable = stabilise_faces(selected_faces(choices), options=options, cuts=cuts)
    result = []
    for per_image, faces in zip(choices, stable):
        picked = [c for c in per_image if c.selected]
        others = [c for c in per_image if not c.selected]
        tracked = [dataclasses.replace(c, face=face) for c, face in zip(picked, faces)]
        filled = [FaceChoice(face=face, index=None, selected=True, reason="selected (filled in from the frames "
                                                                          "around it)") for face in faces[len(picked):]]
        result.append(tracked + filled + others)
    return result


def detect_and_align(images: torch.Tensor, *, detector: FaceDetector, options: PipelineOptions, size: int,
                     region: torch.Tensor | None = None, check_interrupt: Callable[[], None] | None = None,
                     timings: dict | None = None, choices: list | None = None) -> tuple[FaceBatch, int]:
    """``find_choices``, ``stabilise_choices`` and alignment at ``size``. Returns the aligned batch and the number
    of faces detected (before selection). ``timings``, when given, receives the seconds of "detect" and "align";
    ``choices``, when given, is extended with every face found per image (``FaceChoice``, tracked)."""
    start = time.perf_counter()
    chosen = find_choices(images, detector=detector, options=options, region=region, check_interrupt=check_interrupt)
    found = sum(len(per_image) for per_image in chosen)  # detected (filled-in video faces come next)
    chosen = stabilise_choices(chosen, options=options, cuts=video_cuts(images, options))
    detected = time.perf_counter()
    faces = [face for per_image in selected_faces(chosen) for face in per_image]
    batch = align_faces(images, faces, size=size, template=options.template)
    if timings is not None:
        timings["detect"] = detected - start
        timings["align"] = time.perf_counter() - detected
    if choices is not None:
        choices.extend(chosen)
    return batch, found


def restore_and_paste(
    images: torch.Tensor,
    faces_per_image: list[list[DetectedFace]],
    *,
    model: torch.nn.Module,
    options: PipelineOptions = PipelineOptions(),
    background: torch.Tensor | None = None,
    inpaint_masks: torch.Tensor | None = None,
    protect: torch.Tensor | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    check_interrupt: Callable[[], None] | None = None,
    timings: dict | None = None,
    memory: MemoryPolicy = DEFAULT_MEMORY,
) -> tuple[PasteResult, FaceBatch]:
    """Align, restore and paste faces found earlier (``image_index`` relative to ``images``). This lets a caller
    detect and track over a long frame sequence first, then restore it in chunks that fit in memory. ``protect``:
    optional ``[N, H, W]`` 0..1 mask of pixels the paste leaves untouched (``paste_faces``)."""
    _check_images(images)
    timings = {} if timings is None else timings
    mark = time.perf_counter()
    faces = [face for per_image in faces_per_image for face in per_image]
    batch = align_faces(images, faces, size=model_size(model), template=options.template)
    timings["align"] = timings.get("align", 0.0) + time.perf_counter() - mark
    if check_interrupt is not None:
        check_interrupt()
    mark = time.perf_counter()
    restored = restore_faces(model, batch, mode=options.mode, strength=options.strength,
                             batch_size=options.batch_size, inpaint_masks=inpaint_masks, on_progress=on_progress,
                             check_interrupt=check_interrupt, memory=memory)
    timings["restore"] = time.perf_counter() - mark
    if check_interrupt is not None:
        check_interrupt()
    mark = time.perf_counter()
    result = paste_within_memory(restored, memory=memory, mask_type=options.mask_type, feather=options.feather,
                                 color_correction=options.color_correction, scale=options.scale,
                                 max_output_size=options.max_output_size, background=background,
                                 parsing_dir=options.parsing_dir, keep_gray=options.keep_gray, protect=protect)
    timings["paste"] = time.perf_counter() - mark
    return result, restored


def run_pipeline(
    images: torch.Tensor,
    *,
    model: torch.nn.Module,
    detector: FaceDetector,
    options: PipelineOptions = PipelineOptions(),
    background: torch.Tensor | None = None,
    inpaint_masks: torch.Tensor | None = None,
    region: torch.Tensor | None = None,
    protect: torch.Tensor | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    check_interrupt: Callable[[], None] | None = None,
    memory: MemoryPolicy = DEFAULT_MEMORY,
) -> tuple[PasteResult, PipelineReport]:
    """Restore every selected face of ``images`` ``[B, 3, H, W]`` (float32 RGB 0..1, any device) with ``model``.

    Returns the ``PasteResult`` (images ``[B, 3, H*s, W*s]`` at the output scale s, masks) and a ``PipelineReport``.
    ``background``: optional ``[B, 3, h, w]`` image for the output (e.g. from an upscaler; resized if needed).
    ``inpaint_masks``: for ``mode="inpaint"``, image-space ``[B, H, W]`` (1 = damaged). ``region``: only faces this
    ``[N, H, W]`` 0..1 mask covers (``find_choices``); ``protect``: pixels the paste never changes
    (``paste_faces``). ``on_progress(done, total)`` counts restored faces; ``check_interrupt()`` runs between stages
    and between restore batches (it may raise).
    """
    start = time.perf_counter()
    timings: dict[str, float] = {}
    chosen = find_choices(images, detector=detector, options=options, region=region, check_interrupt=check_interrupt)
    found = sum(len(per_image) for per_image in chosen)  # detected (filled-in video faces come next)
    chosen = stabilise_choices(chosen, options=options, cuts=video_cuts(images, options))
    timings["detect"] = time.perf_counter() - start
    result, restored = restore_and_paste(images, selected_faces(chosen), model=model, options=options,
                                         background=background, inpaint_masks=inpaint_masks, protect=protect,
                                         on_progress=on_progress, check_interrupt=check_interrupt, timings=timings,
                                         memory=memory)
    report = PipelineReport(images=int(images.shape[0]), faces_found=found, faces_restored=restored.num_faces,
                            seconds=time.perf_counter() - start, scale=result.scale, stage_seconds=timings,
                            faces=restored, choices=chosen)
    logger.debug("%d image(s), %d face(s) found, %d restored in %.2f s (%s)", report.images, found,
                 report.faces_restored, report.seconds, ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    return result, report
