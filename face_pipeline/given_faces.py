"""Faces given instead of detected: a JSON text (the CLI's ``--faces FILE``, the Faces from JSON node's input) read
into ``DetectedFace`` records, so a user detects once, corrects the faces, and restores many times.

Three layouts are read:

- the pack's own face report (``face_report.py``: ``--save-json``'s ``faces.json``, Detect Faces' ``faces_json``):
  ``{"images": [{"file": "a.jpg", "faces": [...]}, ...]}``; an image is named by ``file`` (the CLI's reports) or,
  without it, by ``image``, its number in the batch (the nodes' reports). Its other fields (``status``, ``reason``,
  ``index``, sizes) are the earlier run's account and are not read;
- a mapping of image to faces: ``{"a.jpg": [face, ...], "sub/b.png": [...]}`` (the nodes: ``{"0": [...]}``);
- a list of faces: the faces of a one-image batch (the nodes only: a list names no file).

A face is ``{"box": [x0, y0, x1, y1], "landmarks": [[x, y] x 5]}`` in the image's pixels (pixel centres at
integers), the landmarks in ``types.LANDMARK_NAMES`` order: the eye on the image's left, the eye on the image's right,
the nose, the mouth corner on the image's left, the one on its right, as seen on the upright face (for a face upside
down, the report's ``rotation`` says how it was turned, and the order is that of the face seen upright); or, as the
report writes them, ``"landmarks": {"left_eye": [x, y], "right_eye": ..., "nose": ..., "mouth_left": ...,
"mouth_right": ...}``. Optional: ``score`` (default 1), ``rotation`` (0, 90, 180, 270), ``track_id``,
``interpolated``. Nothing is rounded: the report writes the numbers the pipeline used, so a report fed back gives
the same crops and pixels.

What is refused (``FacesFileError``, naming the text, the image and the face, counted from 0: "faces.json: image
'a.jpg' face 2: landmarks must be 5 [x, y] points ..., got 4"): a text beyond ``budgets.MAX_FACES_JSON`` (before
parsing), text that is not JSON (with its line and column), a layout other than the three, an image without a name,
an image listed twice, more than ``budgets.MAX_GIVEN_FACES`` faces in an image, a box that is not four finite numbers
with x1 > x0 and y1 > y0, landmarks that are not five pairs of finite numbers (NaN, infinity, text, true/false are
not numbers), the two eyes at one point. Against the image (``check_in_image``): a box wholly outside it (the faces of
another image) and a landmark farther outside it than half the face box's longer side. A box partly outside the frame
is a face cut by the frame, as detectors report them; its landmarks may lie a little outside too (a mouth corner
beyond the edge), but not far: that is a sign of another image's coordinates or x and y swapped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .budgets import MAX_FACES_JSON, MAX_GIVEN_FACES
from .errors import FacesFileError
from .types import LANDMARK_NAMES, DetectedFace

#: how a face is written, for messages
FACE_FORM = '{"box": [x0, y0, x1, y1], "landmarks": [[x, y] x 5]}'
_ROTATIONS = (0, 90, 180, 270)

ImageKey = str | int  # a file name (the CLI) or a number in the batch (the nodes)


def describe_key(key: ImageKey) -> str:
    """An image as messages name it: ``image 'a.jpg'`` or ``image 0``."""
    return f"image {key!r}" if isinstance(key, str) else f"image {key}"


@dataclass(frozen=True)
class GivenFaces:
    """The faces a text gives, per image (``images``: key and faces, in the text's order), checked for their form;
    ``source`` names the text in messages (a file's path, or the node input's name). Each face's ``image_index`` is
    0 until the caller places it in a batch (``faces_for``)."""

    source: str
    images: tuple[tuple[ImageKey, tuple[DetectedFace, ...]], ...]

    def keys(self) -> list[ImageKey]:
        return [key for key, _ in self.images]

    def faces_of(self, key: ImageKey) -> tuple[DetectedFace, ...]:
        """The faces of image ``key``; ``KeyError`` when the text does not list it."""
        for known, faces in self.images:
            if known == key:
                return faces
        raise KeyError(key)

    def error(self, message: str, key: ImageKey | None = None, face: int | None = None) -> FacesFileError:
        where = "" if key is None else f" {describe_key(key)}" + ("" if face is None else f" face {face}") + ":"
        return FacesFileError(f"{self.source}:{where} {message}")

    # ------------------------------------------------------------------------------------------ a node's batch
    def for_batch(self, count: int) -> list[ImageKey | None]:
        """Per image of a batch of ``count`` images, the key listing its faces (None: none listed). Images are named
        by their number (``image`` of a node's report, or a key "0", "1", ...); a file name is refused (a batch's
        images have none), as is a number outside the batch."""
        by_number: dict[int, ImageKey] = {}
        for key in self.keys():
            number = key if isinstance(key, int) else int(key) if key.isdigit() and key.isascii() else None
            if number is None:
                raise self.error(f"names the image {key!r}, but the images of a batch have no file names: name them "
                                 f"by their number in the batch ({{\"0\": [...], \"1\": [...]}}), or give a report "
                                 f"with \"image\" numbers")
            if not 0 <= number < count:
                raise self.error(f"lists faces of image {number}, but the batch has {count} image(s) (numbered from "
                                 f"0)")
            if number in by_number:
                raise self.error(f"lists image {number} twice ({by_number[number]!r} and {key!r})")
            by_number[number] = key
        return [by_number.get(i) for i in range(count)]

    # ------------------------------------------------------------------------------------------ a job's files
    def match_files(self, names: Sequence[str]) -> tuple[dict[str, ImageKey], list[ImageKey]]:
        """Which listed image is which input: ``names`` are the inputs' names relative to their input folder (as
        ``--save-json`` writes ``file``). A key equal to a name is that input; a key that equals none and has no
        folder part is the input with that file name, when exactly one input has it (several: refused, naming
        them). Returns input name -> key, and the keys no input matched (for a warning). Refused: a numbered
        image (it names no file), two keys for one input."""
        exact = set(names)
        by_base: dict[str, list[str]] = {}
        for name in names:
            by_base.setdefault(name.rsplit("/", 1)[-1], []).append(name)
        matched: dict[str, ImageKey] = {}
        unused: list[ImageKey] = []
        for key in self.keys():
            if not isinstance(key, str):
                raise self.error(f"{describe_key(key)} has no file name (\"file\"): a faces file for the command "
                                 f"line names each image by its file, relative to its input folder, as --save-json "
                                 f"writes it")
            normalised = key.replace("\\", "/")
            if normalised in exact:
                name = normalised
            elif "/" not in normalised and len(by_base.get(normalised, ())) == 1:
                name = by_base[normalised][0]
            elif "/" not in normalised and normalised in by_base:
                shown = ", ".join(by_base[normalised][:5])
                raise self.error(f"{describe_key(key)} could be any of {len(by_base[normalised])} inputs ({shown}); "
                                 f"name it by its path relative to its input folder")
            else:
                unused.append(key)
                continue
            if name in matched:
                raise self.error(f"lists the input {name} twice ({matched[name]!r} and {key!r}); keep one")
            matched[name] = key
        return matched, unused


# ---------------------------------------------------------------------------------------------------- reading
def read_faces_file(path: str | os.PathLike[str]) -> GivenFaces:
    """The faces file at ``path`` (``parse_faces``), its size checked before it is read; ``FacesFileError``."""
    shown = str(path)
    try:
        size = os.stat(path).st_size
        if size > MAX_FACES_JSON:
            raise FacesFileError(_too_large(shown, size, "bytes"))
        data = Path(path).read_bytes()[:MAX_FACES_JSON + 1]  # a file that grew since its size was read
    except FileNotFoundError as exc:
        raise FacesFileError(f"{shown}: no such file (the faces to restore, as --save-json writes them)") from exc
    except IsADirectoryError as exc:
        raise FacesFileError(f"{shown} is a folder: --faces takes a JSON file") from exc
    except OSError as exc:
        raise FacesFileError(f"{shown} could not be read: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FacesFileError(f"{shown}: not UTF-8 text (byte {exc.start} cannot be read); a faces file is JSON "
                             f"text") from exc
    return parse_faces(text, source=shown)


def _too_large(source: str, size: int, unit: str) -> str:
    return (f"{source}: {size} {unit}, more than the {MAX_FACES_JSON} read (budgets.MAX_FACES_JSON); split the images "
            f"over several files")


def parse_faces(text: str, *, source: str) -> GivenFaces:
    """The faces ``text`` gives (see the module doc), ``source`` naming it in messages; ``FacesFileError``."""
    if not isinstance(text, str):
        raise FacesFileError(f"{source}: the faces must be JSON text, got {type(text).__name__}")
    if len(text) > MAX_FACES_JSON:
        raise FacesFileError(_too_large(source, len(text), "characters"))
    if not text.strip():
        raise FacesFileError(f"{source}: empty; give the faces as JSON, e.g. {{\"a.jpg\": [{FACE_FORM}]}} or the "
                             f"faces.json --save-json writes")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FacesFileError(f"{source}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise FacesFileError(f"{source}: nested too deeply to be faces (arrays within arrays)") from exc
    given = GivenFaces(source=source, images=())
    if isinstance(data, list):
        images: list[tuple[ImageKey, Any]] = [(0, data)]
    elif isinstance(data, dict) and "images" in data:
        images = _report_images(given, data["images"])
    elif isinstance(data, dict):
        images = list(data.items())
    else:
        raise given.error(f"must be a JSON object (a face report with \"images\", or {{\"a.jpg\": [faces]}}) or a "
                          f"list of faces; got {_kind(data)}")
    read = []
    for key, faces in images:
        if not isinstance(faces, list):
            raise given.error(f"the faces must be a list of {FACE_FORM}; got {_kind(faces)}", key)
        if len(faces) > MAX_GIVEN_FACES:
            raise given.error(f"lists {len(faces)} faces, more than the {MAX_GIVEN_FACES} read for one image "
                              f"(budgets.MAX_GIVEN_FACES)", key)
        read.append((key, tuple(_face(given, key, k, face) for k, face in enumerate(faces))))
    return GivenFaces(source=source, images=tuple(read))


def _report_images(given: GivenFaces, images: Any) -> list[tuple[ImageKey, Any]]:
    """The (key, faces) of a face report's ``images``."""
    if not isinstance(images, list):
        raise given.error(f"\"images\" must be a list of {{\"file\": ..., \"faces\": [...]}}; got {_kind(images)}")
    found: list[tuple[ImageKey, Any]] = []
    seen: set[ImageKey] = set()
    for position, record in enumerate(images):
        if not isinstance(record, dict):
            raise given.error(f"images[{position}] must be an object with \"file\" and \"faces\"; got "
                              f"{_kind(record)}")
        key = record.get("file", record.get("image"))
        if isinstance(key, bool) or not isinstance(key, (str, int)) or key == "":
            raise given.error(f"images[{position}] has no file name: give \"file\" (the input's name relative to "
                              f"its input folder, as --save-json writes it) or \"image\" (its number in the batch)"
                              + ("" if key is None else f"; got {key!r}"))
        if key in seen:
            raise given.error(f"{describe_key(key)} is listed twice (images[{position}]); keep one record per image")
        seen.add(key)
        if "faces" not in record:
            raise given.error(f"images[{position}] has no \"faces\" list", key)
        found.append((key, record["faces"]))
    return found


def _kind(value: Any) -> str:
    """A JSON value's kind, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the text {value[:40]!r}" + ("..." if len(value) > 40 else "")
    return {"list": "a list", "dict": "an object"}.get(type(value).__name__, type(value).__name__)


def _number(value: Any) -> float | None:
    """A finite JSON number as a float, else None (true/false, text, NaN, infinity, a number too large)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _numbers(value: Any, count: int) -> tuple[float, ...] | None:
    if not isinstance(value, list) or len(value) != count:
        return None
    numbers = []
    for item in value:
        number = _number(item)
        if number is None:
            return None
        numbers.append(number)
    return tuple(numbers)


def _face(given: GivenFaces, key: ImageKey, k: int, face: Any) -> DetectedFace:
    """Face ``k`` of image ``key``, its form checked."""
    def fail(message: str) -> FacesFileError:
        return given.error(message, key, k)

    if not isinstance(face, dict):
        raise fail(f"must be an object {FACE_FORM}; got {_kind(face)}")
    for name in ("box", "landmarks"):
        if name not in face:
            raise fail(f"has no \"{name}\"; a face is {FACE_FORM}")
    box = _numbers(face["box"], 4)
    if box is None:
        raise fail(f"box must be 4 finite numbers [x0, y0, x1, y1] in pixels; got {_shown(face['box'])}")
    if box[2] <= box[0] or box[3] <= box[1]:
        raise fail(f"box [x0, y0, x1, y1] must have x1 > x0 and y1 > y0 (left, top, right, bottom); got "
                   f"{_shown(face['box'])}")
    landmarks = _landmarks(face["landmarks"], fail)
    (lx, ly), (rx, ry) = landmarks[0], landmarks[1]
    if math.hypot(rx - lx, ry - ly) < 1.0:
        raise fail(f"the two eyes are less than 1 px apart ({_shown([lx, ly])} and {_shown([rx, ry])}): no face can "
                   f"be aligned on them")
    score = face.get("score", 1.0)
    if _number(score) is None:
        raise fail(f"score must be a finite number (the detector's confidence; leave it out for 1); got "
                   f"{_shown(score)}")
    rotation = face.get("rotation", 0)
    if rotation is None:
        rotation = 0
    if isinstance(rotation, bool) or rotation not in _ROTATIONS:
        raise fail(f"rotation must be one of {', '.join(map(str, _ROTATIONS))} (degrees the face is turned); got "
                   f"{_shown(rotation)}")
    track_id = face.get("track_id")
    if track_id is not None and (isinstance(track_id, bool) or not isinstance(track_id, int)):
        raise fail(f"track_id must be a whole number or null; got {_shown(track_id)}")
    interpolated = face.get("interpolated", False)
    if not isinstance(interpolated, bool):
        raise fail(f"interpolated must be true or false; got {_shown(interpolated)}")
    return DetectedFace(box=(box[0], box[1], box[2], box[3]), score=float(score), landmarks=landmarks,
                        image_index=0, track_id=track_id, rotation=int(rotation), interpolated=interpolated)


def _shown(value: Any) -> str:
    """A JSON value as a message shows it (JSON spelling, NaN included), at most 80 characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _landmarks(value: Any, fail) -> tuple[tuple[float, float], ...]:
    """Five (x, y) from a list of five pairs or the report's named points."""
    names = ", ".join(LANDMARK_NAMES)
    if isinstance(value, dict):
        missing = [name for name in LANDMARK_NAMES if name not in value]
        unknown = [name for name in value if name not in LANDMARK_NAMES]
        if missing or unknown:
            what = (f"lacks {', '.join(missing)}" if missing else "") + ("; " if missing and unknown else "") + \
                   (f"has unknown {', '.join(map(repr, unknown[:5]))}" if unknown else "")
            raise fail(f"landmarks given by name must name the 5 points {names}; it {what}")
        points = [value[name] for name in LANDMARK_NAMES]
    elif isinstance(value, list):
        if len(value) != 5:
            raise fail(f"landmarks must be 5 [x, y] points ({names}, as seen in the image), got {len(value)}")
        points = value
    else:
        raise fail(f"landmarks must be 5 [x, y] points ({names}) or an object naming them; got {_kind(value)}")
    result = []
    for name, point in zip(LANDMARK_NAMES, points):
        pair = _numbers(point, 2)
        if pair is None:
            raise fail(f"landmark {name} must be [x, y], two finite numbers in pixels; got {_shown(point)}")
        result.append((pair[0], pair[1]))
    return tuple(result)


# ---------------------------------------------------------------------------------------------- against an image
def check_in_image(given: GivenFaces, key: ImageKey, *, width: int, height: int) -> None:
    """``FacesFileError`` unless every face of image ``key`` fits an image of ``width`` x ``height``: its box
    overlaps the image, and each landmark lies inside it or outside by at most half the box's longer side (see the
    module doc)."""
    for k, face in enumerate(given.faces_of(key)):
        x0, y0, x1, y1 = face.box
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            raise given.error(f"box {_shown(list(face.box))} lies wholly outside the image ({width}x{height}): are "
                              f"these faces of another image?", key, k)
        margin = max(x1 - x0, y1 - y0) / 2
        for name, (x, y) in zip(LANDMARK_NAMES, face.landmarks):
            outside = max(-x, x - (width - 1), -y, y - (height - 1), 0.0)
            if outside > margin:
                raise given.error(f"landmark {name} {_shown([x, y])} is {outside:.1f} px outside the image "
                                  f"({width}x{height}); a landmark may be outside by at most half the face's box "
                                  f"({margin:.1f} px, a face cut by the frame): are these this image's coordinates, "
                                  f"x before y?", key, k)


def faces_for(given: GivenFaces, keys: Sequence[ImageKey | None], *, sizes: Sequence[tuple[int, int]] | None = None
              ) -> list[list[DetectedFace]]:
    """Per image of a batch, the faces ``keys`` names (None: no face), placed in it (``image_index``), each checked
    against its image's (width, height) in ``sizes`` when given (``check_in_image``)."""
    result = []
    for index, key in enumerate(keys):
        if key is None:
            result.append([])
            continue
        if sizes is not None:
            width, height = sizes[index]
            check_in_image(given, key, width=width, height=height)
        result.append([dataclasses.replace(face, image_index=index) for face in given.faces_of(key)])
    return result
