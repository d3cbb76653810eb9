"""The whole chain in one call: detect -> select -> track (frames) -> align -> restore -> paste."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .alignment import align_faces
from .detection import FaceDetector
from .paste import paste_faces
from .restoration import model_size, restore_faces
from .selection import select_faces
from .types import FaceBatch, PasteResult
from .video import smooth_landmarks, track_faces

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineOptions:
    """Every choice of the pipeline, with the defaults a user gets."""

    score_threshold: float | None = None  # None: the detector's own default
    select: str = "all"  # all / largest / indices
    indices: Sequence[int] = ()
    sort_by: str = "area"
    min_face_size: float = 0.0
    max_faces: int = 0
    template: str = "gpen"
    mode: str = "restore"
    strength: float = 1.0
    mask_type: str = "rounded_rect"
    feather: float = 0.1
    color_correction: bool = True
    scale: int | str = 1
    max_output_size: int = 8192
    parsing_dir: str | None = None
    track: bool = True  # for more than one frame: track faces and smooth their landmarks
    smoothing: float = 0.3
    batch_size: int | None = None


@dataclass(frozen=True)
class PipelineReport:
    images: int
    faces_found: int
    faces_restored: int
    seconds: float
    scale: int
    faces: FaceBatch | None = field(default=None, repr=False, compare=False)  # the restored batch, crops included


def detect_and_align(images: torch.Tensor, *, detector: FaceDetector, options: PipelineOptions, size: int,
                     check_interrupt: Callable[[], None] | None = None) -> tuple[FaceBatch, int]:
    """Detection, selection, tracking and alignment. Returns the aligned batch and the number of faces found."""
    found = detector.detect(images, score_threshold=options.score_threshold)
    total_found = sum(len(f) for f in found)
    if check_interrupt is not None:
        check_interrupt()
    selected = select_faces(found, mode=options.select, indices=options.indices, sort_by=options.sort_by,
                            min_size=options.min_face_size, max_faces=options.max_faces)
    if options.track and images.shape[0] > 1:
        selected = track_faces(selected)
        if options.smoothing > 0:
            selected = smooth_landmarks(selected, strength=options.smoothing)
    faces = [face for per_image in selected for face in per_image]
    return align_faces(images, faces, size=size, template=options.template), total_found


def run_pipeline(
    images: torch.Tensor,
    *,
    model: torch.nn.Module,
    detector: FaceDetector,
    options: PipelineOptions = PipelineOptions(),
    background: torch.Tensor | None = None,
    inpaint_masks: torch.Tensor | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    check_interrupt: Callable[[], None] | None = None,
) -> tuple[PasteResult, PipelineReport]:
    """Restore every selected face of ``images`` ``[B, 3, H, W]`` (RGB 0..1). Images without faces come back
    unchanged (resized to the output scale)."""
    start = time.perf_counter()
    batch, found = detect_and_align(images, detector=detector, options=options, size=model_size(model),
                                    check_interrupt=check_interrupt)
    if batch.num_faces == 0:
        logger.info("no face found in %d image(s): returned unchanged", images.shape[0])
    restored = restore_faces(model, batch, mode=options.mode, strength=options.strength,
                             batch_size=options.batch_size, inpaint_masks=inpaint_masks, on_progress=on_progress,
                             check_interrupt=check_interrupt)
    result = paste_faces(restored, mask_type=options.mask_type, feather=options.feather,
                         color_correction=options.color_correction, scale=options.scale,
                         max_output_size=options.max_output_size, background=background,
                         parsing_dir=options.parsing_dir)
    report = PipelineReport(images=int(images.shape[0]), faces_found=found, faces_restored=restored.num_faces,
                            seconds=time.perf_counter() - start, scale=result.scale, faces=restored)
    return result, report
