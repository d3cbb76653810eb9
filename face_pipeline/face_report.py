"""The faces of a run as plain data (JSON): what was found, where, and what was done with each face and why.

One record per image, each with every face found (in ``index`` order, the faces a filter left out last)::

    {"version": 1, "detector": "yunet_opencv", "rotations": "when_missing", "model_size": 512, "output_scale": 2,
     "images": [{"image": 0, "width": 1024, "height": 768, "faces": [
        {"image": 0, "index": 0, "box": [x1, y1, x2, y2], "score": 0.93,
         "landmarks": {"left_eye": [x, y], "right_eye": [...], "nose": [...], "mouth_left": [...],
                       "mouth_right": [...]},
         "track_id": null, "rotation": 0, "interpolated": false, "model_size": 512, "model": "GPEN-BFR-512.pth",
         "output_scale": 2, "status": "restored", "reason": "selected"}, ...]}]}

Coordinates are in the input image's pixels (pixel centres at integers). They and the score are written as the
pipeline used them, unrounded, so a report fed back (``given_faces``: the CLI's ``--faces``, the Faces from JSON node)
gives the same crops and pixels as the run that wrote it. ``status`` is
``restored`` (restored and pasted), ``selected`` (chosen for restoration by a node that does not restore: Detect
Faces) or ``skipped``; ``reason`` says why a face was skipped. ``model_size`` and ``output_scale`` are null where
the step that sets them has not run. ``model`` names the model that restored the face (with several models, each
face's own: ``restoration.routing``); the top-level ``model_size`` is the largest model's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from .selection import FaceChoice
from .types import LANDMARK_NAMES, DetectedFace

#: per restored face, the size and name of the model that restored it (``Pipeline.face_models``)
FaceModels = Mapping[DetectedFace, tuple[int, str]]

VERSION = 1


def _point(x: float, y: float) -> list[float]:
    return [float(x), float(y)]


def face_record(choice: FaceChoice, *, restored: bool, model_size: int | None = None,
                output_scale: int | None = None, models: FaceModels | None = None) -> dict:
    """One face as a JSON-ready dict (see the module doc); ``restored``: whether selected faces were restored;
    ``models``: the model of each face (else every selected face's model is of ``model_size``, unnamed)."""
    face = choice.face
    model_size, model = models.get(face, (model_size, None)) if models is not None else (model_size, None)
    status = ("restored" if restored else "selected") if choice.selected else "skipped"
    return {
        "image": face.image_index,
        "index": choice.index,
        "box": [float(v) for v in face.box],
        "score": float(face.score),
        "landmarks": {name: _point(x, y) for name, (x, y) in zip(LANDMARK_NAMES, face.landmarks)},
        "track_id": face.track_id,
        "rotation": face.rotation,
        "interpolated": face.interpolated,
        "model_size": model_size if choice.selected else None,
        "model": model if choice.selected else None,
        "output_scale": output_scale if choice.selected else None,
        "status": status,
        "reason": choice.reason,
    }


def faces_report(choices: list[list[FaceChoice]], *, image_size: tuple[int, int], restored: bool,
                 model_size: int | None = None, output_scale: int | None = None, detector: str | None = None,
                 rotations: str | None = None, first_image: int = 0, models: FaceModels | None = None) -> dict:
    """The report of a batch: ``choices`` per image (as ``pipeline.find_choices`` gives them), ``image_size`` (H, W)
    of the input images; ``first_image`` numbers the images when a run reports a long sequence in parts;
    ``models``: the model of each selected face (``Pipeline.face_models``)."""
    height, width = image_size
    images = []
    for offset, per_image in enumerate(choices):
        ordered = sorted(per_image, key=lambda c: (c.index is None, c.index if c.index is not None else 0))
        faces = [face_record(c, restored=restored, model_size=model_size, output_scale=output_scale, models=models)
                 for c in ordered]
        for record in faces:
            record["image"] = first_image + offset
        images.append({"image": first_image + offset, "width": int(width), "height": int(height), "faces": faces})
    return {"version": VERSION, "detector": detector, "rotations": rotations, "model_size": model_size,
            "output_scale": output_scale, "images": images}


def faces_json(report: dict, *, indent: int | None = 1) -> str:
    """``faces_report``'s dict as JSON text."""
    return json.dumps(report, indent=indent)
