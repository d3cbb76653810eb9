"""The annotated preview (face_pipeline/annotate.py) and the JSON face report (face_pipeline/face_report.py)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import data_file, require_shared

from face_pipeline.annotate import FILTERED, LEFT_OUT, SELECTED, annotate_faces, label_rect, label_text
from face_pipeline.detection import load_detector
from face_pipeline.face_report import faces_json, faces_report
from face_pipeline.image import load_image
from face_pipeline.pipeline import PipelineOptions, find_choices, stabilise_choices
from face_pipeline.types import LANDMARK_NAMES

FIELDS = {"image", "index", "box", "score", "landmarks", "track_id", "rotation", "interpolated", "model_size", "model",
          "output_scale", "status", "reason"}


@pytest.fixture(scope="module")
def detector():
    return load_detector("yunet_opencv", weights_dir=data_file("detectors"))


@pytest.fixture(scope="module")
def solvay(detector):
    image = load_image(require_shared("faces", "solvay_conference_1927.png"))
    options = PipelineOptions.of(select="indices", indices=(0, 3), sort_by="left_to_right", min_face_size=34)
    return image, find_choices(image, detector=detector, options=options.detect)


def allowed_region(image: torch.Tensor, choices) -> torch.Tensor:
    """Where the preview may differ from the input: each box grown by its line, its landmarks, its label."""
    height, width = image.shape[-2:]
    allowed = torch.zeros(height, width, dtype=torch.bool)
    for choice in choices:
        x1, y1, x2, y2 = (round(v) for v in choice.face.box)
        pad = 3
        allowed[max(0, y1 - pad):y2 + pad + 1, max(0, x1 - pad):x2 + pad + 1] = True
        lx0, ly0, lx1, ly1 = label_rect(choice, height, width)
        allowed[ly0:ly1, lx0:lx1] = True
    return allowed


def test_the_preview_differs_from_the_input_only_around_the_faces(solvay):
    image, choices = solvay
    preview = annotate_faces(image, choices)
    assert preview.shape == image.shape and preview.dtype == torch.float32
    changed = (preview[0] != image[0]).any(0)  # [H, W]
    allowed = allowed_region(image, choices[0])
    assert changed.sum() > 29 * 100  # every face drawn
    assert not (changed & ~allowed).any()  # nothing drawn anywhere else
    dashed = []
    for choice in choices[0]:  # each face's box in its colour: solid green, dashed orange or gray for the others
        x1, _, x2, y2 = (round(v) for v in choice.face.box)
        colour = torch.tensor(SELECTED if choice.selected else LEFT_OUT if choice.index is not None else FILTERED) / 255
        edge = preview[0, :, y2, x1:x2 + 1]  # the bottom line (labels of the faces below may cover some)
        share = ((edge - colour[:, None]).abs().max(0).values < 1e-6).float().mean().item()
        if choice.selected:
            assert share == 1.0
        else:
            dashed.append(0.3 < share < 0.8)
    assert len(dashed) == 27 and sum(dashed) >= 0.8 * len(dashed)


def test_labels_name_index_score_track_and_angle(solvay):
    _, choices = solvay
    selected = [c for c in choices[0] if c.selected]
    assert [c.index for c in selected] == [0, 3]
    assert label_text(selected[0]) == f"#0 {selected[0].face.score:.2f}"
    left_out = [c for c in choices[0] if c.index is None]
    assert left_out and label_text(left_out[0]).startswith("#- ")  # smaller than min_face_size


def test_video_track_ids_in_labels_and_report(detector):
    photo = load_image(data_file("faces", "grace_hopper.jpg"))
    frames = torch.cat([photo, torch.roll(photo, 4, dims=-1)])
    options = PipelineOptions.of(track=True, smoothing=0.3)
    choices = stabilise_choices(find_choices(frames, detector=detector, options=options.detect),
                                options=options.video)
    assert [c.face.track_id for per in choices for c in per] == [0, 0]
    assert label_text(choices[1][0]).endswith(" id 0")
    report = faces_report(choices, image_size=(600, 512), restored=True, model_size=512, output_scale=1)
    assert [f["track_id"] for image in report["images"] for f in image["faces"]] == [0, 0]


def test_the_json_lists_every_face_with_its_fields(solvay):
    image, choices = solvay
    text = faces_json(faces_report(choices, image_size=tuple(image.shape[-2:]), restored=True, model_size=512,
                                   output_scale=2, detector="yunet_opencv", rotations="when_missing"))
    data = json.loads(text)
    assert data["version"] == 1 and data["detector"] == "yunet_opencv" and data["rotations"] == "when_missing"
    (only,) = data["images"]
    assert (only["width"], only["height"]) == (image.shape[-1], image.shape[-2])
    faces = only["faces"]
    assert len(faces) == len(choices[0]) == 29
    for record in faces:
        assert set(record) == FIELDS
        assert list(record["landmarks"]) == list(LANDMARK_NAMES) and len(record["box"]) == 4
    restored = [f for f in faces if f["status"] == "restored"]
    assert [f["index"] for f in restored] == [0, 3] and all(f["reason"] == "selected" for f in restored)
    assert all(f["model_size"] == 512 and f["output_scale"] == 2 for f in restored)
    skipped = [f for f in faces if f["status"] == "skipped"]
    assert len(skipped) == 27 and all(f["model_size"] is None for f in skipped)
    assert sum(f["index"] is None for f in skipped) >= 3
    assert {f["reason"] for f in skipped if f["index"] is not None} == {"its index is not in indices"}
    assert all(f["reason"].startswith("smaller than min_face_size") for f in skipped if f["index"] is None)
    indices = [f["index"] for f in faces if f["index"] is not None]
    assert indices == list(range(len(indices)))  # listed in index order, left-out faces last
    by_index = {c.index: c for c in choices[0] if c.index is not None}
    assert faces[0]["box"] == list(by_index[0].face.box)  # unrounded: a report fed back gives the same pixels
    detect_only = faces_report(choices, image_size=(10, 10), restored=False)
    assert {f["status"] for f in detect_only["images"][0]["faces"]} == {"selected", "skipped"}


def test_bad_arguments(solvay):
    image, choices = solvay
    with pytest.raises(ValueError, match=r"annotate_faces got faces for 1 images and 2 images"):
        annotate_faces(torch.cat([image, image]), choices)
    with pytest.raises(ValueError, match=r"expects images \[B, 3, H, W\]"):
        annotate_faces(image[0], choices)


def test_a_face_filled_into_a_video_gap_is_reported_as_restored():
    from face_pipeline.selection import choose_faces
    from face_pipeline.types import DetectedFace

    def at(frame, x):
        return DetectedFace(box=(x, 10, x + 40, 50), score=0.9, image_index=frame,
                            landmarks=((x + 10, 20), (x + 30, 20), (x + 20, 30), (x + 12, 40), (x + 28, 40)))

    options = PipelineOptions.of(track=True, smoothing=0.0, fill_gaps=3)
    chosen = choose_faces([[at(0, 10)], [], [at(2, 14)]])
    stable = stabilise_choices(chosen, options=options.video)
    (filled,) = stable[1]
    assert filled.selected and filled.index is None and filled.face.interpolated and filled.face.box[0] == 12
    report = faces_report(stable, image_size=(64, 64), restored=True, model_size=256, output_scale=1)
    (record,) = report["images"][1]["faces"]
    assert record["status"] == "restored" and record["interpolated"] and record["track_id"] == 0
    assert record["reason"] == "selected (filled in from the frames around it)"
