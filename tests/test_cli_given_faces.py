"""cli.py --faces (issue 26): faces given instead of detected. A faces.json written by --save-json, fed back, gives
the detected run's bytes; the plain {"a.jpg": [faces]} form is read by bare file name; inputs left out of the file
are skipped, never detected; a bad file stops the run before any work (exit status 2) with a message naming the
image and the face."""

from __future__ import annotations

import json

import pytest
from helpers import cmd, face, files_under, plain

from cli import main
from face_pipeline import given_faces
from face_pipeline.types import LANDMARK_NAMES


def detected_run(tmp_path, *extra: str) -> dict:
    """a.jpg, sub/b.png (one face each, 512x600) and wall.png (none) restored with detection into tmp/out; returns
    its faces.json."""
    face(tmp_path, "a.jpg")
    face(tmp_path, "sub/b.png")
    plain(tmp_path, "wall.png")
    assert main([*cmd(tmp_path, tmp_path / "in"), "--save-json", "--save-crops", *extra]) == 0
    return json.loads((tmp_path / "out" / "faces.json").read_text())


def test_a_faces_json_fed_back_gives_the_detected_runs_bytes(tmp_path):
    report = detected_run(tmp_path, "--scale", "2")
    assert sum(len(image["faces"]) for image in report["images"]) == 2
    again = tmp_path / "again"
    arguments = cmd(tmp_path, tmp_path / "in", output=again)
    assert main([*arguments, "--save-json", "--save-crops", "--scale", "2", "--faces",
                 str(tmp_path / "out" / "faces.json")]) == 0
    first, second = files_under(tmp_path / "out"), files_under(again)
    assert set(first) == set(second) and {"a.jpg", "sub/b.png", "wall.png"} <= set(first)
    assert [name for name in first if first[name] != second[name]] == ["faces.json"]
    given = json.loads(second["faces.json"])
    assert given["detector"] == "given" and report["detector"] == "yunet_opencv"
    assert given["rotations"] is None and report["rotations"] == "when_missing"  # nothing was searched
    assert given["images"] == report["images"]  # the same faces, where they were, restored the same way


def test_the_plain_form_by_bare_name_and_inputs_left_out(tmp_path, capsys):
    report = detected_run(tmp_path)
    (found,) = next(image for image in report["images"] if image["file"] == "sub/b.png")["faces"]
    plain_form = {"b.png": [{"box": found["box"],
                             "landmarks": [found["landmarks"][name] for name in LANDMARK_NAMES]}]}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(plain_form))
    again = tmp_path / "again"
    capsys.readouterr()
    assert main([*cmd(tmp_path, tmp_path / "in", output=again), "--faces", str(path)]) == 0  # left out: not an error
    err = capsys.readouterr().err
    assert set(files_under(again)) == {"sub/b.png"}
    assert files_under(again)["sub/b.png"] == files_under(tmp_path / "out")["sub/b.png"]
    for name in ("a.jpg", "wall.png"):
        assert f"{name}: not in --faces {path}" in err


def test_selection_applies_to_the_given_faces(tmp_path):
    report = detected_run(tmp_path)
    (found,) = next(image for image in report["images"] if image["file"] == "a.jpg")["faces"]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"a.jpg": [found]}))
    again = tmp_path / "again"
    small = min(found["box"][2] - found["box"][0], found["box"][3] - found["box"][1])
    assert main([*cmd(tmp_path, tmp_path / "in" / "a.jpg", output=again), "--faces", str(path), "--save-json",
                 "--min-face-size", str(int(small) + 1)]) == 0
    (image,) = json.loads((again / "faces.json").read_text())["images"]
    (record,) = image["faces"]
    assert record["status"] == "skipped" and record["reason"].startswith("smaller than min_face_size")
    assert (again / "a.jpg").read_bytes() == (tmp_path / "in" / "a.jpg").read_bytes()  # no face: copied


A_FACE = {"box": [200.0, 100.0, 400.0, 330.0],
          "landmarks": [[260.0, 190.0], [340.0, 190.0], [300.0, 240.0], [270.0, 280.0], [330.0, 280.0]]}


def with_face(**changes) -> dict:
    return {**A_FACE, **changes}


BAD_FILES = [  # (file text, the message's end)
    ('{"a.jpg": [', "faces.json: not valid JSON: Expecting value at line 1 column 12"),
    ('{"a.jpg": [{"box": [1, 2, 3, 4],}]}', "faces.json: not valid JSON: Expecting property name enclosed in "
                                             "double quotes at line 1 column 33"),
    ('{"images": [{"faces": []}]}', "faces.json: images[0] has no file name: give \"file\""),
    ('{"images": [{"image": 0, "faces": []}]}', "faces.json: image 0 has no file name (\"file\")"),
    (json.dumps({"a.jpg": [A_FACE, with_face(landmarks=A_FACE["landmarks"][:4])]}),
     "faces.json: image 'a.jpg' face 1: landmarks must be 5 [x, y] points (left_eye, right_eye, nose, mouth_left, "
     "mouth_right, as seen in the image), got 4"),
    (json.dumps({"a.jpg": [with_face(landmarks=[[260, 190], [340, 190], ["300", 240], [270, 280], [330, 280]])]}),
     "faces.json: image 'a.jpg' face 0: landmark nose must be [x, y], two finite numbers in pixels; got "
     "[\"300\", 240]"),
    ('{"a.jpg": [{"box": [200, 100, 400, 330], "landmarks": [[260, 190], [NaN, 190], [300, 240], [270, 280], '
     '[330, 280]]}]}', "face 0: landmark right_eye must be [x, y], two finite numbers in pixels; got [NaN, 190]"),
    (json.dumps({"a.jpg": [with_face(box=[400, 100, 200, 330])]}),
     "face 0: box [x0, y0, x1, y1] must have x1 > x0 and y1 > y0 (left, top, right, bottom); got [400, 100, 200, "
     "330]"),
    (json.dumps({"a.jpg": [with_face(box=[200, 100, 400])]}),
     "face 0: box must be 4 finite numbers [x0, y0, x1, y1] in pixels; got [200, 100, 400]"),
    (json.dumps({"a.jpg": [with_face(landmarks=[[260, 190], [340, 190], [300, 240], [270, 280], [330, 900]])]}),
     "faces.json: image 'a.jpg' face 0: landmark mouth_right [330.0, 900.0] is 301.0 px outside the image (512x600); "
     "a landmark may be outside by at most half the face's box (115.0 px, a face cut by the frame): are these this "
     "image's coordinates, x before y?"),
    (json.dumps({"a.jpg": [with_face(box=[700, 100, 900, 330])]}),
     "face 0: box [700.0, 100.0, 900.0, 330.0] lies wholly outside the image (512x600): are these faces of another "
     "image?"),
    (json.dumps({"a.jpg": [{"box": [200, 100, 400, 330]}]}), "face 0: has no \"landmarks\""),
    (json.dumps({"a.jpg": {"box": [1, 2, 3, 4]}}), "image 'a.jpg': the faces must be a list of"),
    ("[]", "image 0 has no file name (\"file\")"),
    ('"a.jpg"', "faces.json: must be a JSON object (a face report with \"images\", or {\"a.jpg\": [faces]}) or a "
                "list of faces; got the text 'a.jpg'"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES, ids=range(len(BAD_FILES)))
def test_a_bad_faces_file_stops_the_run_before_any_work(tmp_path, capsys, text, message):
    face(tmp_path, "a.jpg")
    (tmp_path / "faces.json").write_text(text)
    arguments = [*cmd(tmp_path, tmp_path / "in"), "--faces", "faces.json"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        assert main(arguments) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ")
    assert not (tmp_path / "out").exists()


def test_a_faces_file_beyond_its_budget_is_refused_unread(tmp_path, capsys, monkeypatch):
    face(tmp_path, "a.jpg")
    path = tmp_path / "faces.json"
    path.write_text(json.dumps({"a.jpg": [A_FACE]}) + " " * 200)
    monkeypatch.setattr(given_faces, "MAX_FACES_JSON", 100)
    assert main([*cmd(tmp_path, tmp_path / "in"), "--faces", str(path)]) == 2
    size = path.stat().st_size
    assert f"{path}: {size} bytes, more than the 100 read (budgets.MAX_FACES_JSON)" in capsys.readouterr().err


def test_a_bare_name_of_two_inputs_is_ambiguous(tmp_path, capsys):
    face(tmp_path, "x/a.jpg")
    face(tmp_path, "y/a.jpg")
    path = tmp_path / "faces.json"
    path.write_text(json.dumps({"a.jpg": [A_FACE]}))
    assert main([*cmd(tmp_path, tmp_path / "in"), "--faces", str(path)]) == 2
    assert (f"{path}: image 'a.jpg' could be any of 2 inputs (x/a.jpg, y/a.jpg); name it by its path relative to its "
            f"input folder") in capsys.readouterr().err


def test_faces_and_video_frames_do_not_go_together(tmp_path, capsys):
    face(tmp_path, "a.jpg")
    path = tmp_path / "faces.json"
    path.write_text(json.dumps({"a.jpg": [A_FACE]}))
    assert main([*cmd(tmp_path, tmp_path / "in"), "--faces", str(path), "--video-frames"]) == 2
    assert "--faces is for photos" in capsys.readouterr().err


def test_a_run_with_faces_started_again_completes_its_faces_json(tmp_path):
    detected_run(tmp_path)
    again = tmp_path / "again"
    command = [*cmd(tmp_path, tmp_path / "in", output=again), "--save-json", "--faces",
               str(tmp_path / "out" / "faces.json")]
    assert main(command) == 0
    written = (again / "faces.json").read_bytes()
    (again / "faces.json").unlink()  # as a run killed before its end leaves it
    assert main(command) == 0  # every output exists: only the records are made again, from the faces given
    assert (again / "faces.json").read_bytes() == written
