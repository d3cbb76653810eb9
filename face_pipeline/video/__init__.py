"""Video: an image batch is a sequence of frames (only when the caller says so); faces are tracked across it, short
gaps in a track filled, and their landmarks smoothed. Scene cuts end every track."""

from .gaps import fill_gaps
from .scenes import frame_thumbnails, scene_cuts
from .smoothing import smooth_landmarks
from .tracking import track_faces

__all__ = ["track_faces", "smooth_landmarks", "fill_gaps", "frame_thumbnails", "scene_cuts"]
