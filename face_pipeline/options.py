"""The options of the pipeline's stages, one frozen record per stage, each validated once when built.

``DetectOptions`` (detection and selection), ``VideoOptions`` (tracking a frame sequence), ``AlignOptions``
(the alignment template), ``RestoreOptions`` (``restoration/options.py``) and ``PasteOptions``
(``paste/options.py``). ``PipelineOptions`` is their composition, for the whole assembly (``pipeline.Pipeline``).
Every field carries its default, allowed values and help text (``fields.option``).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field

from .alignment import TEMPLATES
from .alignment.align import CROP_INTERPOLATIONS
from .alignment.transform import FIT_PRECISIONS
from .budgets import MIN_SCORE_THRESHOLD
from .detection import ROTATION_MODES
from .fields import check_fields, option
from .paste.options import DEFAULT_MAX_OUTPUT_SIZE, MAX_OUTPUT_SIZE, MIN_OUTPUT_SIZE, PasteOptions
from .region import MIN_OVERLAP
from .restoration.options import RestoreOptions
from .selection import SELECT_MODES, SORT_ORDERS

__all__ = ["DetectOptions", "VideoOptions", "AlignOptions", "RestoreOptions", "PasteOptions", "PipelineOptions",
           "DEFAULT_MAX_OUTPUT_SIZE", "MIN_OUTPUT_SIZE", "MAX_OUTPUT_SIZE"]


@dataclass(frozen=True)
class DetectOptions:
    """Which faces are found and which of them are restored (``pipeline.find_choices``)."""

    score_threshold: float | None = option(None, f"detection score threshold, {MIN_SCORE_THRESHOLD:g}..1 (0 or unset: "
                                           f"the detector's own)", low=0.0, high=1.0, optional=True)
    rotations: str = option("when_missing", "faces on their side or upside down: look on the image turned by "
                            "90/180/270 degrees when no upright face is found (when_missing, default), always, or "
                            "never (none)", choices=ROTATION_MODES)
    select: str = option("all", "faces to restore per image", choices=SELECT_MODES)
    indices: Sequence[int] = option((), "with select='indices': positions after sorting, per image")
    sort_by: str = option("area", "order of the faces in each image", choices=SORT_ORDERS)
    min_face_size: float = option(0.0, "skip faces smaller than this (pixels of the box side)", low=0.0)
    max_faces: int = option(0, "at most this many faces per image (0 = no limit)", low=0, whole=True)
    region_overlap: float = option(MIN_OVERLAP, "with a region mask: the share of a face's box it must cover",
                                   low=0.0, high=1.0)

    def __post_init__(self) -> None:
        check_fields(self)
        object.__setattr__(self, "score_threshold", detector_threshold(self.score_threshold))
        if isinstance(self.indices, (str, bytes)) or not all(
                isinstance(i, numbers.Integral) and not isinstance(i, bool) and i >= 0 for i in self.indices):
            raise ValueError(f"indices must be whole numbers of at least 0, got {self.indices!r}")


@dataclass(frozen=True)
class VideoOptions:
    """Whether the batch is the frames of one video, and how faces are followed through it
    (``pipeline.stabilise_choices``)."""

    track: bool = option(False, "the batch is the frames of one video: track faces, fill short gaps, smooth "
                                "landmarks", boolean=True)
    smoothing: float = option(0.3, "landmark smoothing strength (0: off); only when tracking", low=0.0, high=1.0)
    fill_gaps: int = option(3, "when tracking: a face missed for at most this many frames is interpolated",
                            low=0, whole=True)
    temporal_smoothing: float = option(0.75, "when tracking: blend each restored face with its track's previous "
                                       "few frames where the input face did not change, against flicker (0: off, "
                                       "each frame restored alone)", low=0.0, high=1.0)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class AlignOptions:
    """How faces are cropped for the model (``pipeline.align_stage``)."""

    template: str = option("gpen", "alignment template", choices=TEMPLATES)
    crop_interpolation: str = option("bicubic", "how the aligned crops are sampled: bicubic (sharper), or bilinear as "
                                     "the official GPEN code (its warpAffine flags=3 runs as bilinear)",
                                     choices=CROP_INTERPOLATIONS)
    fit_precision: str = option("float64", "precision of the landmarks -> template fit: float64 (exact), or float32 "
                                "as the official code (its matrices are up to 1.5e-4 px off the exact fit)",
                                choices=FIT_PRECISIONS)
    round_crops: bool = option(False, "round the aligned crops to 8-bit levels, as the official code's uint8 crops "
                                      "(default: kept in float)", boolean=True)

    def __post_init__(self) -> None:
        check_fields(self)


def detector_threshold(value: float | None) -> float | None:
    """A detection threshold as the CLI and the nodes take it: None or 0 is the detector's own default (None), else a
    score from ``MIN_SCORE_THRESHOLD`` to 1 (``ValueError`` naming the floor: below it the detectors report noise)."""
    if value is None or value == 0:
        return None
    if not MIN_SCORE_THRESHOLD <= value <= 1:
        raise ValueError(f"score_threshold must be 0 (the detector's own) or from {MIN_SCORE_THRESHOLD:g} to 1, got "
                         f"{value:g}: below {MIN_SCORE_THRESHOLD:g} the detectors report noise as faces (more than a "
                         f"thousand on one portrait at 0)")
    return float(value)


STAGES = {"detect": DetectOptions, "video": VideoOptions, "align": AlignOptions, "restore": RestoreOptions,
          "paste": PasteOptions}


@dataclass(frozen=True)
class PipelineOptions:
    """The options of every stage, composed; each record is validated when it is built."""

    detect: DetectOptions = field(default_factory=DetectOptions)
    video: VideoOptions = field(default_factory=VideoOptions)
    align: AlignOptions = field(default_factory=AlignOptions)
    restore: RestoreOptions = field(default_factory=RestoreOptions)
    paste: PasteOptions = field(default_factory=PasteOptions)

    def __post_init__(self) -> None:
        for name, kind in STAGES.items():
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}")

    @classmethod
    def of(cls, **values) -> PipelineOptions:
        """The records from stage option names (``PipelineOptions.of(strength=0.5, mask_type="ellipse")``): each
        value goes to the record that has a field of that name; the others keep their defaults."""
        per_stage: dict[str, dict] = {name: {} for name in STAGES}
        for key, value in values.items():
            stage = next((name for name, kind in STAGES.items()
                          if key in {f.name for f in dataclasses.fields(kind)}), None)
            if stage is None:
                raise TypeError(f"{key!r} is not an option of any stage ({', '.join(STAGES)})")
            per_stage[stage][key] = value
        return cls(**{name: STAGES[name](**kwargs) for name, kwargs in per_stage.items()})
