"""Faces lying on their side or upside down: detection retried on the image turned by 90, 180 and 270 degrees.

Every detector we ship is trained on upright faces and misses a face rolled by about 90 degrees (the shared photos
turned by 90 degrees give no face at all). ``detect_faces`` runs the detector on the upright images and, depending
on ``rotations``, also on copies turned by 90, 180 and 270 degrees (``torch.rot90``, counter-clockwise), maps the
boxes and landmarks found there back into the original pixels, and merges the angles (``merge_angles``): a box
overlapping a face already kept is the same face seen again and is dropped. Every angle is searched on one copy
of the images at the detector's working size (``FaceDetector.working_copy``), turned: a big frame is downscaled once,
and never copied whole per angle.

``rotations``:
- ``none``: upright only (a face turned by 90 degrees is not found);
- ``when_missing`` (default): the turned copies only for images where no face was found upright, where a face was
  found rolled by more than ``UPRIGHT_ROLL`` (RetinaFace finds some faces on their side, with rough landmarks), or
  where the image's most confident face looks turned (``looks_turned``: YuNet calls a face that is upside down or
  on its side "upright", its landmarks made up upright, with a lower score than it gives upright faces); this
  costs nothing on images whose most confident face scores at least the detector's ``sure_upright_score``, one
  small detection (four crops of ``CHECK_SIDE`` pixels) on images with a less sure face, and three extra
  detections on the others;
- ``always``: every image at all four angles (four detections), for pictures that mix upright and rolled faces.

Landmark order: a turned copy shows the rolled face upright, so the detector names its landmarks as on an upright
face (``left_eye`` = the eye on the left of the upright face, i.e. the subject's right eye, and so on). Turning the
points back is a rotation, never a mirror, so the names keep meaning the same parts of the face; they are no longer
"on the image's left" in the original frame, and need not be. Alignment maps these five points onto the template
with a similarity transform, which undoes any roll: the aligned crop comes out upright and not mirrored.
Boxes found on a turned copy are turned back as boxes (the same rectangle), so they stay axis-aligned.

The check of an image's most confident face, when it scores below the detector's ``sure_upright_score`` (measured
per detector on the shared photos: the lowest score of an upright photo's most confident face lies above the
highest of a turned face called upright) (``looks_turned``): a square crop around its box (``CHECK_CONTEXT``
times the box's long side, resized to ``CHECK_SIDE`` pixels) is detected on at 0, 90, 180 and 270 degrees, one
batch; each angle scores the best face there that holds the crop's centre and looks upright in that copy (rolled by
at most ``UPRIGHT_ROLL``). Every detector scores a face highest the right way up (on the shared photos turned by
0/90/180/270 degrees; ``benchmarks/bench_rotations.py --orientations``), so a turned angle that scores above the
upright one means the image is turned: it is then searched at every angle like an image without a face, and
``merge_angles`` keeps the better sighting. An image whose check says upright keeps its faces exactly as found.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
import torch.nn.functional as F

from ..boxes import keep_distinct
from ..types import DetectedFace
from .base import FaceDetector

logger = logging.getLogger(__name__)

ROTATION_MODES = ("none", "when_missing", "always")
ANGLES = (90, 180, 270)  # counter-clockwise, as torch.rot90 turns an image [.., H, W] with k = angle // 90
UPRIGHT_ROLL = 45.0  # degrees: a face found rolled further than this is looked for on the turned copies too
#: the check of an image's most confident face (``looks_turned``): its crop's side in pixels, the crop's side over the
#: box's long side, and the score down to which the crop's faces are seen (the wrong way up they score lower)
CHECK_SIDE = 160
CHECK_CONTEXT = 1.6
CHECK_THRESHOLD = 0.3


def unrotate_points(points: np.ndarray, angle: int, height: int, width: int) -> np.ndarray:
    """Map ``[..., 2]`` (x, y) points found on ``torch.rot90(image, angle // 90, dims=(-2, -1))`` back to ``image``
    (``height`` x ``width`` pixels, pixel centres at integers)."""
    points = np.asarray(points, np.float64)
    x, y = points[..., 0], points[..., 1]
    if angle == 0:
        back = (x, y)
    elif angle == 90:  # the turned copy is width x height: its (x, y) is (y, W - 1 - x) of the original
        back = (width - 1 - y, x)
    elif angle == 180:
        back = (width - 1 - x, height - 1 - y)
    elif angle == 270:
        back = (y, height - 1 - x)
    else:
        raise ValueError(f"angle must be 0, 90, 180 or 270, got {angle}")
    return np.stack(back, axis=-1)


def unrotate_face(face: DetectedFace, angle: int, height: int, width: int) -> DetectedFace:
    """A face found on the image turned by ``angle`` degrees, in the original ``height`` x ``width`` pixels (the
    landmarks keep their names: see the module doc). ``rotation`` records the angle it was found at."""
    x1, y1, x2, y2 = face.box
    corners = unrotate_points(np.array([[x1, y1], [x2, y2]]), angle, height, width)  # opposite corners stay opposite
    low, high = corners.min(0), corners.max(0)
    landmarks = unrotate_points(face.landmarks_array(), angle, height, width)
    return dataclasses.replace(face, box=(float(low[0]), float(low[1]), float(high[0]), float(high[1])),
                               landmarks=tuple((float(x), float(y)) for x, y in landmarks), rotation=angle)


def rescale_face(face: DetectedFace, sx: float, sy: float) -> DetectedFace:
    """A face found on a copy of an image resized by 1 / ``sx`` across and 1 / ``sy`` down, in the image's pixels
    (pixel centres kept: ``x -> (x + 0.5) * sx - 0.5``)."""
    if sx == 1.0 and sy == 1.0:
        return face
    scale = np.array([sx, sy])
    box = (np.array(face.box, np.float64).reshape(2, 2) + 0.5) * scale - 0.5
    landmarks = (face.landmarks_array().astype(np.float64) + 0.5) * scale - 0.5
    return dataclasses.replace(face, box=tuple(float(v) for v in box.reshape(-1)),
                               landmarks=tuple((float(x), float(y)) for x, y in landmarks))


def apparent_roll(face: DetectedFace) -> float:
    """How far ``face`` is rolled in the image it was found on, in degrees (0 upright, 180 upside down; the
    absolute angle between straight down and the line from the eyes' midpoint to the mouth's)."""
    points = face.landmarks_array()
    down = (points[3] + points[4]) / 2 - (points[0] + points[1]) / 2
    return abs(float(np.degrees(np.arctan2(-down[0], down[1]))))


def merge_angles(candidates: list[tuple[DetectedFace, float]]) -> list[DetectedFace]:
    """Faces of one image found at several angles -> one face per person.

    ``candidates``: (face in the original pixels, its ``apparent_roll`` in the copy it was found on). A face is
    often found at two angles: upright-ish in one copy, and rolled by 90 degrees in the next (RetinaFace then places
    its landmarks roughly; YuNet even calls a face on its side upright, landmarks made up). Faces seen within
    ``UPRIGHT_ROLL`` of upright are kept first, then by descending score (the made-up sightings score lower than
    the real ones); a face whose box duplicates a kept one is dropped (``boxes.keep_distinct``). The result is
    sorted by descending score, like ``FaceDetector.detect``."""
    order = sorted(candidates, key=lambda c: (c[1] > UPRIGHT_ROLL, -c[0].score))
    kept = [order[i][0] for i in keep_distinct(np.array([face.box for face, _ in order]))]
    return sorted(kept, key=lambda f: -f.score)


def face_crop(image: torch.Tensor, box: tuple[float, float, float, float], *, side: int = CHECK_SIDE,
              context: float = CHECK_CONTEXT) -> torch.Tensor:
    """The square around ``box`` (x1, y1, x2, y2 in ``image``'s pixels; ``context`` times its long side, centred)
    of ``image`` (``[3, H, W]`` float RGB 0..1), resized to ``[3, side, side]`` (bilinear; the image's edge
    repeated where the square leaves it)."""
    height, width = int(image.shape[-2]), int(image.shape[-1])
    x1, y1, x2, y2 = box
    half = context * max(x2 - x1, y2 - y1, 1.0) / 2
    cx, cy = (x1 + x2) / 2 + 0.5, (y1 + y2) / 2 + 0.5  # pixel centres at integers -> edges at 0
    theta = torch.tensor([[[2 * half / width, 0.0, 2 * cx / width - 1], [0.0, 2 * half / height, 2 * cy / height - 1]]],
                         dtype=torch.float32, device=image.device)  # [1, 2, 3]: output grid -> input's -1..1
    grid = F.affine_grid(theta, [1, 3, side, side], align_corners=False)  # [1, side, side, 2]
    return F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)[0]


def looks_turned(detector: FaceDetector, images: torch.Tensor, faces: dict[int, DetectedFace], *,
                 side: int = CHECK_SIDE) -> list[int]:
    """Which images of ``images`` (``[B, 3, H, W]`` RGB 0..1) are not the right way up, judged by one face each:
    ``faces`` maps an image's index to its most confident face (in its pixels). An image is turned when that face's
    crop (``face_crop``) turned by 90, 180 or 270 degrees holds a face, upright in that copy and over the crop's
    centre, that scores above the upright crop's (see the module doc). One ``detect`` of ``4 len(faces)`` crops of
    ``side`` x ``side`` pixels. Returns the indices of the turned images, ascending."""
    if not faces:
        return []
    crops = torch.stack([torch.rot90(face_crop(images[index], face.box, side=side), k, dims=(-2, -1))
                         for index, face in faces.items() for k in range(4)]).clamp(0.0, 1.0)  # [4 n, 3, side, side]
    seen = detector.detect(crops, score_threshold=CHECK_THRESHOLD)
    centre = (side - 1) / 2
    turned = []
    for position, (index, face) in enumerate(faces.items()):
        scores = [max((f.score for f in seen[4 * position + k] if apparent_roll(f) <= UPRIGHT_ROLL
                       and f.box[0] <= centre <= f.box[2] and f.box[1] <= centre <= f.box[3]), default=0.0)
                  for k in range(4)]
        if max(scores[1:]) > scores[0]:
            turned.append(index)
            logger.debug("image %d: its face at %s looks turned (its crop scores %s at 0/90/180/270 degrees)", index,
                         tuple(round(v) for v in face.box), ", ".join(f"{score:.4f}" for score in scores))
    return sorted(turned)


def detect_faces(detector: FaceDetector, images: torch.Tensor, *, rotations: str = "when_missing",
                 score_threshold: float | None = None) -> list[list[DetectedFace]]:
    """``detector.detect(images)`` (``[B, 3, H, W]`` RGB 0..1) with faces at other angles found as ``rotations``
    says (one of ``ROTATION_MODES``, see the module doc). Returns ``B`` lists of ``DetectedFace`` in the input's
    pixels, sorted by descending score; faces found on a turned copy have ``rotation`` set to its angle."""
    if rotations not in ROTATION_MODES:
        raise ValueError(f"rotations must be one of {', '.join(ROTATION_MODES)}; got {rotations!r}")
    height, width = int(images.shape[-2]), int(images.shape[-1])
    small = detector.working_copy(images)
    sx, sy = width / small.shape[-1], height / small.shape[-2]
    seen = detector.detect(small, score_threshold=score_threshold)  # in the working copy's pixels
    found = [[rescale_face(f, sx, sy) for f in faces] for faces in seen]
    if rotations == "none" or not found:
        return found
    if rotations == "always":
        todo = list(range(len(found)))
    else:  # no face, or one the detector saw rolled (its landmarks are rough): try the turned copies
        todo = [i for i, faces in enumerate(found) if not faces or any(apparent_roll(f) > UPRIGHT_ROLL for f in faces)]
        doubtful = {i: seen[i][0] for i in range(len(found))  # upright, but not scored as upright faces are
                    if i not in todo and seen[i][0].score < detector.sure_upright_score}
        todo = sorted(todo + looks_turned(detector, small, doubtful))
    if not todo:
        return found
    subset = small if len(todo) == len(found) else small[todo]
    small_height, small_width = int(small.shape[-2]), int(small.shape[-1])
    candidates = {i: [(f, apparent_roll(f)) for f in found[i]] for i in todo}
    for angle in ANGLES:
        turned = torch.rot90(subset, angle // 90, dims=(-2, -1))  # [b, 3, w, h] for 90 and 270
        for slot, faces in enumerate(detector.detect(turned, score_threshold=score_threshold)):
            index = todo[slot]
            candidates[index] += [
                (rescale_face(unrotate_face(dataclasses.replace(f, image_index=index), angle, small_height,
                                            small_width), sx, sy), apparent_roll(f)) for f in faces]
    result = [list(faces) for faces in found]
    for index, faces in candidates.items():
        result[index] = merge_angles(faces)
        logger.debug("image %d: %d face(s) over four angles (%s)", index, len(result[index]),
                     ", ".join(f"{f.rotation} deg" for f in result[index]))
    return result
