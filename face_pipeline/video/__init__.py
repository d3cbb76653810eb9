"""Video: an image batch is a sequence of frames; faces are tracked across it and their landmarks smoothed."""

from .smoothing import smooth_landmarks
from .tracking import track_faces

__all__ = ["track_faces", "smooth_landmarks"]
