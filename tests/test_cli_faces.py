"""cli.py's options of issue 15: --rotations, --save-annotated, --save-json (a turned photo and one without a face)."""

from __future__ import annotations

import json

import cv2
import numpy as np
from conftest import data_file

from cli import main

MODEL_256 = ("gpen", "compact", "compact_256_cm1_n0.0625_s64.safetensors")


def arguments(tmp_path, *extra: str) -> list[str]:
    return [str(tmp_path / "in"), "--model", str(data_file(*MODEL_256)), "--output", str(tmp_path / "out"),
            "--detector", "yunet_opencv", "--detector-dir", str(data_file("detectors")), "--no-download",
            *extra]


def inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    photo = cv2.imread(str(data_file("faces", "grace_hopper.jpg")))
    cv2.imwrite(str(folder / "turned.png"), np.ascontiguousarray(np.rot90(photo)))  # 600 wide, 512 high
    cv2.imwrite(str(folder / "wall.png"), np.full((40, 50, 3), 90, np.uint8))
    return folder


def test_a_turned_photo_is_restored_and_reported(tmp_path):
    folder = inputs(tmp_path)
    assert main(arguments(tmp_path, "--save-annotated", "--save-json")) == 0
    out = tmp_path / "out"
    original = cv2.imread(str(folder / "turned.png"))
    restored = cv2.imread(str(out / "turned.png"))
    assert restored.shape == original.shape and np.abs(restored.astype(int) - original).max() > 50  # restored
    annotated = cv2.imread(str(out / "annotated" / "turned.png.png"))
    assert annotated.shape == original.shape
    changed = (annotated != original).any(-1)
    data = json.loads((out / "faces.json").read_text())
    assert data["version"] == 1 and data["detector"] == "yunet_opencv" and data["rotations"] == "when_missing"
    assert data["model_size"] == 256
    by_file = {image["file"]: image for image in data["images"]}
    assert set(by_file) == {"turned.png", "wall.png"} and by_file["wall.png"]["faces"] == []
    (face,) = by_file["turned.png"]["faces"]
    assert face["status"] == "restored" and face["rotation"] == 270 and face["index"] == 0
    assert face["output_scale"] == 1 and face["model_size"] == 256
    x1, y1, x2, y2 = (round(v) for v in face["box"])
    assert changed[y1:y2, x1:x2].any() and not changed[y2 + 40:, :].any()  # drawn around the face only
    assert not (out / "annotated" / "wall.png.png").exists() or \
        (cv2.imread(str(out / "annotated" / "wall.png.png")) == 90).all()


def test_without_rotations_the_turned_face_is_missed(tmp_path, capsys):
    inputs(tmp_path)
    assert main(arguments(tmp_path, "--rotations", "none", "--save-json")) == 0
    data = json.loads((tmp_path / "out" / "faces.json").read_text())
    assert data["rotations"] == "none" and all(image["faces"] == [] for image in data["images"])
    assert not (tmp_path / "out" / "annotated").exists()


def test_upside_down_photos_are_restored_the_right_way_up_with_the_default_rotations(tmp_path):
    # OpenCV YuNet (the default) finds both faces turned by 180 degrees as "upright", its landmarks made up the right
    # way up; the default rotations (when_missing) must still restore them as found on the copy turned back
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("grace_hopper.jpg", "astronaut.jpg"):
        photo = cv2.imread(str(data_file("faces", name)))
        cv2.imwrite(str(folder / f"{name}.png"), np.ascontiguousarray(photo[::-1, ::-1]))  # turned by 180 degrees
    assert main(arguments(tmp_path, "--save-json")) == 0
    data = json.loads((tmp_path / "out" / "faces.json").read_text())
    assert data["rotations"] == "when_missing"
    for image in data["images"]:
        (face,) = image["faces"]
        assert face["status"] == "restored" and face["rotation"] == 180, (image["file"], face)
        marks = face["landmarks"]
        eyes_y = (marks["left_eye"][1] + marks["right_eye"][1]) / 2
        mouth_y = (marks["mouth_left"][1] + marks["mouth_right"][1]) / 2
        assert eyes_y > mouth_y + 20, image["file"]  # the eyes below the mouth: the face is upside down in the photo
