"""Faces from JSON (issue 26): Detect Faces' faces_json fed back gives Restore and Paste the same faces, and the same
pixels; edited and hand-written JSON is read; bad JSON is refused before the prompt runs, naming the face."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import DETECT, comfy_image, node

pytestmark = pytest.mark.usefixtures("like_comfyui")

PASTE = dict(mask_type="rounded_rect", feather=0.1, color_correction=True, output_scale="2", max_output_size=8192)
FROM_JSON = {name: DETECT[name] for name in ("select", "indices", "sort_by", "min_face_size", "max_faces", "template",
                                             "crop_size")}


@pytest.fixture(scope="module")
def two_photos():
    return torch.cat([comfy_image("grace_hopper.jpg", size=(512, 448)), comfy_image("astronaut.jpg", size=(512, 448))])


def restored_and_pasted(pack, gpen_model, image, faces):
    restored, _ = node(pack, "GPENRestoreFaces").restore(gpen_model=gpen_model, faces=faces, mode="restore",
                                                         strength=1.0)
    return node(pack, "GPENPasteFaces").paste(image=image, faces=restored, **PASTE)


def test_detect_faces_json_fed_back_gives_the_same_pixels(pack, gpen_model, detector, two_photos):
    detected = node(pack, "GPENDetectFaces").detect(image=two_photos, face_detector=detector, **DETECT)
    faces, crops, count, _annotated, text = detected
    assert count >= 2 and set(faces.image_indices) == {0, 1}
    given = node(pack, "GPENFacesFromJSON").from_json(image=two_photos, faces_json=text, **FROM_JSON)
    assert given[0].faces == faces.faces and torch.equal(given[0].affines, faces.affines)
    assert torch.equal(given[1], crops) and given[2] == count
    report = json.loads(given[4])
    assert report["detector"] == "given" and report["images"] == json.loads(text)["images"]
    direct = restored_and_pasted(pack, gpen_model, two_photos, faces)
    again = restored_and_pasted(pack, gpen_model, two_photos, given[0])
    assert not torch.equal(direct[0][:, ::2, ::2], two_photos)  # restored
    assert torch.equal(direct[0], again[0]) and torch.equal(direct[1], again[1])


def test_hand_written_faces_and_selection(pack, detector, two_photos):
    photo = two_photos[:1]
    (face,) = node(pack, "GPENDetectFaces").detect(image=photo, face_detector=detector, **DETECT)[0].faces
    plain = {"box": list(face.box), "landmarks": [list(point) for point in face.landmarks]}
    moved = {"box": [b + 40 for b in face.box], "landmarks": [[x + 40, y + 40] for x, y in face.landmarks]}
    as_list = node(pack, "GPENFacesFromJSON").from_json(image=photo, faces_json=json.dumps([plain]), **FROM_JSON)
    (only,) = as_list[0].faces
    assert only.landmarks == face.landmarks and only.score == 1.0  # no score given: 1
    text = json.dumps({"1": [plain, moved]})
    by_number = node(pack, "GPENFacesFromJSON").from_json(image=two_photos, faces_json=text, **FROM_JSON)
    assert by_number[2] == 2 and by_number[0].image_indices == (1, 1)  # image 0: none listed, left unchanged
    second = node(pack, "GPENFacesFromJSON").from_json(image=photo, faces_json=json.dumps([plain, moved]),
                                                        **{**FROM_JSON, "select": "indices", "indices": "1"})
    assert second[2] == 1
    none = node(pack, "GPENFacesFromJSON").from_json(image=photo, faces_json="[]", **FROM_JSON)
    assert none[2] == 0 and none[1].shape == (1, 256, 256, 3)  # the preview's black placeholder
    statuses = [f["status"] for f in json.loads(second[4])["images"][0]["faces"]]
    assert sorted(statuses) == ["selected", "skipped"]


A_FACE = {"box": [150, 150, 300, 330], "landmarks": [[190, 220], [260, 220], [225, 260], [195, 295], [255, 295]]}

BAD_TEXTS = [  # (faces_json, the message's start)
    ('{"0": [', "faces_json: not valid JSON: Expecting value at line 1 column 8"),
    ("", "faces_json: empty; give the faces as JSON"),
    (json.dumps({"a.jpg": [A_FACE]}), "faces_json: names the image 'a.jpg', but the images of a batch have no file "
                                      "names"),
    (json.dumps({"3": [A_FACE]}), "faces_json: lists faces of image 3, but the batch has 2 image(s)"),
    (json.dumps({"0": [A_FACE, {**A_FACE, "landmarks": A_FACE["landmarks"][:3]}]}),
     "faces_json: image '0' face 1: landmarks must be 5 [x, y] points"),
    (json.dumps({"images": [{"image": 1, "faces": [{**A_FACE, "box": [300, 150, 150, 330]}]}]}),
     "faces_json: image 1 face 0: box [x0, y0, x1, y1] must have x1 > x0 and y1 > y0"),
    (json.dumps([{**A_FACE, "landmarks": {**dict(zip(("left_eye", "right_eye", "nose", "mouth_left"),
                                                       A_FACE["landmarks"]))}}]),
     "faces_json: image 0 face 0: landmarks given by name must name the 5 points left_eye, right_eye, nose, "
     "mouth_left, mouth_right; it lacks mouth_right"),
    (json.dumps([{**A_FACE, "landmarks": [[190, 220], [190.5, 220], [225, 260], [195, 295], [255, 295]]}]),
     "faces_json: image 0 face 0: the two eyes are less than 1 px apart"),
    (json.dumps({"0": [{**A_FACE, "landmarks": [[190, 220], [260, 220], [225, 260], [195, 295], [255, 900]]}]}),
     "faces_json: image '0' face 0: landmark mouth_right [255.0, 900.0] is 389.0 px outside the image (448x512)"),
]


@pytest.mark.parametrize(("text", "message"), BAD_TEXTS, ids=range(len(BAD_TEXTS)))
def test_bad_json_is_refused_naming_the_face(pack, two_photos, text, message):
    with pytest.raises(ValueError) as raised:  # the pack's own copy of face_pipeline.errors.FacesFileError
        node(pack, "GPENFacesFromJSON").from_json(image=two_photos, faces_json=text, **FROM_JSON)
    assert type(raised.value).__name__ == "FacesFileError" and str(raised.value).startswith(message)


def test_typed_json_is_checked_before_the_prompt_runs(pack):
    cls = type(node(pack, "GPENFacesFromJSON"))
    assert cls.VALIDATE_INPUTS(faces_json=json.dumps([A_FACE]), **FROM_JSON) is True
    assert cls.VALIDATE_INPUTS(faces_json=None, **FROM_JSON) is True  # linked: read when it runs
    assert cls.VALIDATE_INPUTS(faces_json='[{"box": [1, 2, 3]}]', **FROM_JSON).startswith(
        "faces_json: image 0 face 0: has no \"landmarks\"")
    assert cls.VALIDATE_INPUTS(faces_json="[NaN]", **FROM_JSON).startswith(
        "faces_json: image 0 face 0: must be an object")
    assert cls.VALIDATE_INPUTS(faces_json="[]", **{**FROM_JSON, "indices": "x"}).startswith("indices: ")
