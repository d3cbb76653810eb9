"""face_pipeline: detect, align, restore and paste back faces, independent of ComfyUI.

Folders by stage: ``detection/`` (RetinaFace, YuNet; turned faces in ``rotations.py``), ``selection.py`` (with
``region.py``: user masks), ``alignment/`` (templates, similarity transforms, warps), ``restoration/`` (batched model
runs), ``paste/`` (masks, colour, protected regions, compositing at 1x/2x/4x), ``video/`` (tracking and smoothing
across frames), ``pipeline.py`` (the whole chain), ``annotate.py`` and ``face_report.py`` (what was found, drawn and
as JSON; ``given_faces.py`` reads such JSON back: faces given instead of detected), ``image.py`` (conversion and
image files with their alpha, EXIF and ICC profile). File jobs (output plan, safe writing, lock, summary, engines) are
the layer above, ``face_jobs/``. Records that travel between stages are in ``types.py``; images are ``[B, 3, H, W]``
float32 RGB in 0..1 throughout.

What the pipeline needs from its host (memory, progress, Cancel, model and detector placement) and from a restoration
model (a ``gpen_arch.GPEN``: ``.config.size``, RGB in [-1, 1]) are ``typing.Protocol``s (``protocols.py``: ``Host``,
``RestorationModel``; ``host.LibraryHost`` is the host of the CLI and the library), so this package imports nothing
from ``gpen_arch`` or ComfyUI, except gpen_arch's safe checkpoint reader when a detector or parsing weight file is read
(``weights_file.py``). Importing it loads only torch and numpy; OpenCV, facexlib and kornia are imported by
the functions that need them.
"""

from .alignment import TEMPLATES, align_faces, realign, similarity_transform, template_points, warp_images
from .annotate import annotate_faces
from .detection import DETECTOR_NAMES, ROTATION_MODES, WEIGHT_FILES, FaceDetector, detect_faces, load_detector
from .errors import (
    DetectorError,
    DetectorWeightsCorrupt,
    DetectorWeightsMissing,
    FacePipelineError,
    FacesFileError,
    FileLayoutError,
    InvalidImageError,
    MissingDependencyError,
    OutputExistsError,
    OutputLockedError,
    OutputWriteError,
    PasteError,
    RestoreError,
    RestoreOutOfMemory,
)
from .face_report import faces_json, faces_report
from .given_faces import GivenFaces, parse_faces, read_faces_file
from .host import LibraryHost
from .image import IMAGE_SUFFIXES, ImageFile, encode_image, load_image, read_image, to_rgb_float
from .options import AlignOptions, DetectOptions, PasteOptions, PipelineOptions, RestoreOptions, VideoOptions
from .paste import MASK_TYPES, paste_faces
from .pipeline import Pipeline, PipelineReport, find_choices, given_choices, run_pipeline
from .protocols import Host, RestorationModel
from .restoration import RESTORE_MODES, restore_faces
from .selection import SELECT_MODES, SORT_ORDERS, FaceChoice, choose_faces, parse_indices
from .types import LANDMARK_NAMES, DetectedFace, FaceBatch, PasteResult
from .video import smooth_landmarks, track_faces

__all__ = [
    "LANDMARK_NAMES", "DetectedFace", "FaceBatch", "PasteResult",
    "DETECTOR_NAMES", "WEIGHT_FILES", "FaceDetector", "load_detector", "ROTATION_MODES", "detect_faces",
    "SELECT_MODES", "SORT_ORDERS", "parse_indices", "FaceChoice", "choose_faces",
    "TEMPLATES", "template_points", "similarity_transform", "warp_images", "align_faces", "realign",
    "RESTORE_MODES", "restore_faces",
    "MASK_TYPES", "paste_faces",
    "track_faces", "smooth_landmarks",
    "Pipeline", "PipelineOptions", "DetectOptions", "VideoOptions", "AlignOptions", "RestoreOptions", "PasteOptions",
    "PipelineReport", "find_choices", "run_pipeline", "Host", "LibraryHost", "RestorationModel",
    "annotate_faces", "faces_report", "faces_json", "GivenFaces", "parse_faces", "read_faces_file", "given_choices",
    "IMAGE_SUFFIXES", "to_rgb_float", "load_image", "encode_image", "read_image", "ImageFile",
    "FacePipelineError", "InvalidImageError", "DetectorError", "DetectorWeightsMissing", "DetectorWeightsCorrupt",
    "RestoreError", "RestoreOutOfMemory", "PasteError", "FileLayoutError", "OutputExistsError", "OutputWriteError",
    "OutputLockedError", "MissingDependencyError", "FacesFileError",
]
