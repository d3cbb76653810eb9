"""Small frozen records that travel between the stages of the face pipeline.

detection -> ``DetectedFace`` (one per face, image coordinates)
alignment -> ``FaceBatch`` (aligned crops of every selected face of an image batch, with their matrices)
restoration -> the same ``FaceBatch`` with ``restored`` filled in (``dataclasses.replace``)
paste -> ``PasteResult`` (images at output resolution, combined and per-face masks)

Conventions used everywhere in this package:
- images are torch tensors ``[B, 3, H, W]`` float32 RGB in 0..1 (ComfyUI's ``[B, H, W, C]`` is converted at the node
  boundary);
- points are ``(x, y)`` in pixels, pixel centres at integer coordinates (OpenCV's convention);
- an affine matrix is ``[2, 3]`` and maps ``(x, y, 1)`` of its source to its destination, as ``cv2.warpAffine``
  takes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

#: Landmark order used by every detector backend: the eye on the image's left, the eye on the image's right,
#: the nose tip, the mouth corner on the image's left, the mouth corner on the image's right, as seen on the upright
#: face (for a face found on a turned copy of the image, ``rotation`` > 0, "left" is the left of the face as it
#: appears upright there, which need not be the left of the original image; see detection/rotations.py).
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True)
class DetectedFace:
    """One face found in one image of a batch (all coordinates in that image's pixels)."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks: tuple[tuple[float, float], ...]  # five (x, y), in LANDMARK_NAMES order
    image_index: int
    track_id: int | None = None  # set by video tracking; None for single images
    rotation: int = 0  # degrees (counter-clockwise) the image was turned by when this face was found: 0, 90, 180, 270
    interpolated: bool = False  # video: not detected in this frame, filled in between two detections of its track

    def __post_init__(self) -> None:
        if len(self.landmarks) != 5:
            raise ValueError(f"a face needs 5 landmarks, got {len(self.landmarks)}")
        numbers = (*self.box, self.score, *(v for point in self.landmarks for v in point))
        if not all(math.isfinite(v) for v in numbers):
            raise ValueError(f"a face's box, score and landmarks must be finite numbers; got box {self.box}, score "
                             f"{self.score}, landmarks {self.landmarks}")

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def inter_ocular(self) -> float:
        (lx, ly), (rx, ry) = self.landmarks[0], self.landmarks[1]
        return float(np.hypot(rx - lx, ry - ly))

    def landmarks_array(self) -> np.ndarray:
        """The five landmarks as a ``[5, 2]`` float64 array of (x, y)."""
        return np.asarray(self.landmarks, dtype=np.float64)


@dataclass(frozen=True)
class FaceBatch:
    """Every selected face of an image batch, aligned to a square template crop of side ``size``.

    ``images`` keeps a reference (not a copy) to the source batch so crops can be re-made at another size
    (a model of another resolution) without losing detail, and so paste-back can check it gets the same batch.
    """

    images: torch.Tensor  # [B, 3, H, W] float32 RGB 0..1, the source batch
    faces: tuple[DetectedFace, ...]  # F faces, in crop order
    crops: torch.Tensor  # [F, 3, size, size] float32 RGB 0..1
    affines: torch.Tensor  # [F, 2, 3] float64, image -> crop
    inverse_affines: torch.Tensor  # [F, 2, 3] float64, crop -> image
    size: int  # crop side in pixels
    template: str  # "gpen" or "ffhq"
    restored: torch.Tensor | None = None  # [F, 3, size, size] float32 RGB 0..1 once restored
    restore_mode: str | None = None  # the mode the faces were restored in (restoration.RESTORE_MODES)
    streamed: bool = False  # crops and restored are shape-only placeholders: the faces come as ``RestoredStep``s
    face_sizes: tuple[int, ...] | None = None  # faces aligned for models of different sizes (``restoration.routing``):
    # per face, the side its matrices map to and its crops have; crops and restored are then ``[F, 3, size, size]``
    # with face i in the top-left ``face_sizes[i]`` square (``size``: the largest). None: every face at ``size``
    color_reference: torch.Tensor | None = None  # [F, 3, m, m] float32 0..1 (m = min(128, size); with face_sizes,
    # face i's in the top-left min(128, face_sizes[i]) square): what the colour correction matches instead of the
    # crops (video: blended over each track, ``video/temporal.py``); None: the crops

    def __post_init__(self) -> None:
        if self.face_sizes is not None and (len(self.face_sizes) != len(self.faces)
                                            or any(not 0 < s <= self.size for s in self.face_sizes)):
            raise ValueError(f"face_sizes must give each of the {len(self.faces)} faces a side of at most {self.size}, "
                             f"got {self.face_sizes}")

    @classmethod
    def placeholder(cls, *, images: torch.Tensor, faces: Sequence[DetectedFace], affines: torch.Tensor,
                    inverse_affines: torch.Tensor, size: int, template: str,
                    restore_mode: str | None = None, face_sizes: tuple[int, ...] | None = None) -> FaceBatch:
        """A batch of ``faces`` whose ``crops`` and ``restored`` are shape-only placeholders (``[F, 3, size, size]``
        views of one zero: no memory), for a paste that receives the real ones step by step (``FaceSource``)."""
        nothing = torch.zeros((), dtype=torch.float32).expand(len(faces), 3, size, size)
        return cls(images=images, faces=tuple(faces), crops=nothing, affines=affines, inverse_affines=inverse_affines,
                   size=size, template=template, restored=nothing, restore_mode=restore_mode, streamed=True,
                   face_sizes=face_sizes)

    def side(self, face: int) -> int:
        """The side face ``face`` was aligned (and restored) at: ``face_sizes[face]``, else ``size``."""
        return self.size if self.face_sizes is None else self.face_sizes[face]

    @property
    def num_faces(self) -> int:
        return len(self.faces)

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the source images."""
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    @property
    def image_indices(self) -> tuple[int, ...]:
        return tuple(face.image_index for face in self.faces)

    def restored_faces(self) -> torch.Tensor:
        """``restored`` ``[F, 3, size, size]``; ``ValueError`` when these faces have not been restored yet."""
        if self.restored is None:
            raise ValueError("these faces have not been restored yet: run the restore step (restore_faces) first")
        return self.restored


@dataclass(frozen=True)
class RestoredStep:
    """A few consecutive faces of a batch, restored: what paste-back needs of them. A stream of steps lets a group
    photo or a long clip be restored and pasted with only one step's crops alive."""

    first: int  # where the step's first face is among the faces the source was asked for
    crops: torch.Tensor  # [n, 3, S, S] float32 RGB 0..1, the aligned crops (the colour correction's reference)
    restored: torch.Tensor  # [n, 3, S, S] float32 RGB 0..1
    color_reference: torch.Tensor | None = None  # [n, 3, m, m] float32 RGB 0..1 (m = min(128, S)), the colour
    # correction's reference instead of the crops' own statistics (video: ``video/temporal.py``); None: the crops


#: ``source(positions)``: the restored faces at ``positions`` (indices into a ``FaceBatch``'s faces, increasing) as
#: ``RestoredStep``s in order, their ``first`` counted within ``positions``; each step is made when it is asked for.
FaceSource = Callable[[Sequence[int]], Iterable[RestoredStep]]


@dataclass(frozen=True)
class PasteResult:
    """What paste-back returns: images at output resolution and their masks."""

    images: torch.Tensor  # [B, 3, H*scale, W*scale] float32 RGB 0..1
    mask: torch.Tensor  # [B, H*scale, W*scale] float32 0..1, the combined face mask
    face_masks: torch.Tensor  # [F, H*scale, W*scale] float32 0..1, one per face (in FaceBatch order); [0, ...] when
    # the caller did not ask for them (``paste_faces(face_masks=False)``: they grow with the faces)
    scale: int  # the output scale actually used
