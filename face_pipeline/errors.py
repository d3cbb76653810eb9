"""Exceptions of the face pipeline. Messages say what was expected, what was found and what to do."""

from __future__ import annotations


class FacePipelineError(Exception):
    """Base class of the errors this package raises on purpose."""


class InvalidImageError(FacePipelineError, ValueError):
    """An input image that cannot be processed (wrong shape, empty, NaN, unreadable file, ...)."""


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
