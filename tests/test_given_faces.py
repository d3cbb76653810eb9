"""face_pipeline.given_faces (issue 26) alone: the three layouts, the matching of listed images to inputs (a CLI run)
or to a batch (a node), the budgets, and given faces through the pipeline's selection."""

from __future__ import annotations

import json

import pytest
import torch

from face_pipeline import given_faces
from face_pipeline.errors import FacesFileError
from face_pipeline.face_report import faces_json, faces_report
from face_pipeline.given_faces import faces_for, parse_faces, read_faces_file
from face_pipeline.pipeline import DetectOptions, given_choices
from face_pipeline.selection import choose_faces
from face_pipeline.types import LANDMARK_NAMES, DetectedFace

POINTS = [[40.25, 50.5], [60.125, 50.0], [50.0, 60.0], [42.0, 70.0], [58.0, 70.0]]


def a_face(shift: float = 0.0, **extra) -> dict:
    return {"box": [30 + shift, 35 + shift, 70 + shift, 80 + shift],
            "landmarks": [[x + shift, y + shift] for x, y in POINTS], **extra}


def test_a_report_reads_back_as_the_faces_it_was_written_from():
    faces = [DetectedFace(box=(30.123456789, 35.5, 70.0, 80.987654321), score=0.912345678,
                          landmarks=tuple((x + 0.0001234, y) for x, y in POINTS), image_index=0, track_id=4,
                          rotation=180),
             DetectedFace(box=(1.0, 2.0, 9.0, 12.0), score=0.5, landmarks=tuple(map(tuple, POINTS)), image_index=1)]
    choices = choose_faces([[faces[0]], [faces[1]]])
    text = faces_json(faces_report(choices, image_size=(100, 120), restored=False))
    given = parse_faces(text, source="faces_json")
    assert given.keys() == [0, 1]
    read = faces_for(given, given.for_batch(2))
    assert read == [[faces[0]], [faces[1]]]  # every number, track and rotation as they were


def test_the_plain_forms():
    named = {**a_face(), "landmarks": dict(zip(LANDMARK_NAMES, POINTS))}
    given = parse_faces(json.dumps({"a.jpg": [a_face(), named], "sub/b.png": []}), source="f.json")
    first, second = given.faces_of("a.jpg")
    assert first == second and first.score == 1.0 and first.rotation == 0 and first.track_id is None
    assert given.faces_of("sub/b.png") == ()
    assert parse_faces(json.dumps([a_face()]), source="t").keys() == [0]


def test_files_are_matched_by_relative_or_unambiguous_bare_name():
    given = parse_faces(json.dumps({"a.jpg": [a_face()], "b.png": [], "sub\\c.jpg": [], "gone.jpg": []}), source="f")
    matched, unused = given.match_files(["a.jpg", "sub/a.jpg", "x/b.png", "sub/c.jpg", "d.jpg"])
    assert matched == {"a.jpg": "a.jpg", "x/b.png": "b.png", "sub/c.jpg": "sub\\c.jpg"}  # exact wins over bare
    assert unused == ["gone.jpg"]
    with pytest.raises(FacesFileError, match=r"^f: image 'b.png' could be any of 2 inputs \(x/b.png, y/b.png\)"):
        given.match_files(["a.jpg", "x/b.png", "y/b.png"])
    twice = parse_faces(json.dumps({"a.jpg": [], "sub/a.jpg": []}), source="f")
    with pytest.raises(FacesFileError, match=r"^f: lists the input sub/a.jpg twice \('a.jpg' and 'sub/a.jpg'\)"):
        twice.match_files(["sub/a.jpg"])


def test_a_batch_is_matched_by_number():
    given = parse_faces(json.dumps({"images": [{"image": 2, "faces": [a_face()]}, {"image": 0, "faces": []}]}),
                        source="t")
    assert given.for_batch(3) == [0, None, 2]
    with pytest.raises(FacesFileError, match=r"^t: lists faces of image 2, but the batch has 2 image\(s\)"):
        given.for_batch(2)
    with pytest.raises(FacesFileError, match=r"^t: lists image 1 twice \('1' and '01'\)"):
        parse_faces(json.dumps({"1": [], "01": []}), source="t").for_batch(2)


@pytest.mark.parametrize(("text", "message"), [
    (json.dumps({"images": [{"file": "a.jpg", "faces": []}, {"file": "a.jpg", "faces": []}]}),
     "t: image 'a.jpg' is listed twice (images[1]); keep one record per image"),
    (json.dumps({"images": {"file": "a.jpg"}}), "t: \"images\" must be a list of"),
    (json.dumps({"images": [{"file": "a.jpg"}]}), "t: image 'a.jpg': images[0] has no \"faces\" list"),
    (json.dumps({"a.jpg": [a_face(score=True)]}), "t: image 'a.jpg' face 0: score must be a finite number"),
    (json.dumps({"a.jpg": [a_face(rotation=45)]}), "t: image 'a.jpg' face 0: rotation must be one of 0, 90, 180, 270"),
    (json.dumps({"a.jpg": [a_face(track_id=1.5)]}), "t: image 'a.jpg' face 0: track_id must be a whole number"),
    (json.dumps({"a.jpg": [{**a_face(), "box": [1e400, 0, 2, 3]}]}).replace("Infinity", "1e400"),
     "t: image 'a.jpg' face 0: box must be 4 finite numbers"),
    (json.dumps({"a.jpg": [{**a_face(), "landmarks": {**dict(zip(LANDMARK_NAMES, POINTS)), "chin": [1, 2]}}]}),
     "t: image 'a.jpg' face 0: landmarks given by name must name the 5 points left_eye, right_eye, nose, mouth_left, "
     "mouth_right; it has unknown 'chin'"),
    ("[" * 100_000 + "]" * 100_000, "t: nested too deeply to be faces"),
    ("null", "t: must be a JSON object"),
])
def test_form_errors(text, message):
    with pytest.raises(FacesFileError) as raised:
        parse_faces(text, source="t")
    assert str(raised.value).startswith(message)


def test_budgets(tmp_path, monkeypatch):
    monkeypatch.setattr(given_faces, "MAX_FACES_JSON", 50)
    with pytest.raises(FacesFileError, match=r"^t: 51 characters, more than the 50 read \(budgets.MAX_FACES_JSON\)"):
        parse_faces(" " * 51, source="t")
    monkeypatch.setattr(given_faces, "MAX_GIVEN_FACES", 2)
    with pytest.raises(FacesFileError, match=r"^t: image 0: lists 3 faces, more than the 2 read for one image"):
        parse_faces("[" + ", ".join(["{}"] * 3) + "]", source="t")
    with pytest.raises(FacesFileError, match=r"nothing\.json: no such file"):
        read_faces_file(tmp_path / "nothing.json")
    (tmp_path / "latin.json").write_bytes(b'{"\xe9": []}')
    with pytest.raises(FacesFileError, match=r"latin\.json: not UTF-8 text \(byte 2 cannot be read\)"):
        read_faces_file(tmp_path / "latin.json")


def test_given_faces_are_selected_as_detected_ones():
    images = torch.zeros(1, 3, 120, 160)
    given = parse_faces(json.dumps([a_face(), a_face(40, score=0.3)]), source="t")
    faces = faces_for(given, [0], sizes=[(160, 120)])
    chosen = given_choices(images, faces, options=DetectOptions(select="largest", sort_by="score"))
    assert [c.selected for c in chosen[0]] == [True, False] and chosen[0][0].face.score == 1.0
    with pytest.raises(ValueError, match="given faces for 1 image"):
        given_choices(torch.zeros(2, 3, 120, 160), faces, options=DetectOptions())
