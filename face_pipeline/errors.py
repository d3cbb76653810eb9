"""Exceptions of the face pipeline. Messages say what was expected, what was found and what to do."""

from __future__ import annotations


class FacePipelineError(Exception):
    """Base class of the errors this package raises on purpose."""


class InvalidImageError(FacePipelineError, ValueError):
    """An input image that cannot be processed (wrong shape, empty, NaN, unreadable file, ...)."""


class MissingDependencyError(FacePipelineError, ImportError):
    """An optional library that the chosen option needs is not installed, or cannot be imported in this Python."""


class ImageTooLargeError(InvalidImageError):
    """An image beyond the pack's pixel budget (``budgets.MAX_SIDE`` per side, ``budgets.MAX_PIXELS`` in all), found
    from its header before it is decoded."""


class DetectorError(FacePipelineError):
    """A face detector could not be built or run."""


class DetectorWeightsMissing(DetectorError):
    """A detector's weight file is not in the folder and may not (or could not) be downloaded."""


class DetectorWeightsCorrupt(DetectorError):
    """A detector's weight file is there but unreadable or has the wrong checksum."""


class RestoreError(FacePipelineError):
    """Restoration failed."""


class RestoreOutOfMemory(RestoreError):
    """Not even one face fits in memory."""


class PasteError(FacePipelineError, ValueError):
    """Faces cannot be pasted onto the given images."""


class FileLayoutError(FacePipelineError, ValueError):
    """The inputs and the output of a file job do not fit together: a missing input, no images, two inputs that
    would be written under one name, an output that would land on an input or inside a folder being read."""


class OutputExistsError(FacePipelineError, FileExistsError):
    """An output file is already there and replacing it was not asked for."""


class OutputWriteError(FacePipelineError, OSError):
    """An output file could not be written (disk full, no permission, ...); nothing is left under its name."""


class OutputLockedError(FacePipelineError):
    """Another run is writing into the same output folder."""


class FacesFileError(FacePipelineError, ValueError):
    """Faces given instead of detected (``given_faces``: a JSON file or text) that cannot be used: too large, not
    JSON, not laid out as faces, a face with a wrong box or landmarks, or faces that do not fit their image."""
