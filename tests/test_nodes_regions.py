"""The nodes' options of issue 15 with the ComfyUI test double: rotations, region and protect masks, the annotated
preview and the JSON face report (keyword arguments, as ComfyUI calls nodes)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import comfy_image, node

pytestmark = pytest.mark.usefixtures("like_comfyui")

PASTE = dict(mask_type="rounded_rect", feather=0.1, color_correction=False, output_scale="1", max_output_size=8192)
DETECT = dict(select="all", indices="0", sort_by="left_to_right", min_face_size=0, max_faces=0, template="gpen",
              crop_size="256", video_smoothing=0.0)


def two_faces():
    image = comfy_image("grace_hopper.jpg")  # [1, 600, 512, 3]
    return torch.cat([image, image.flip(2)], dim=2)  # [1, 600, 1024, 3]: one face in each half


def test_new_outputs_come_after_the_old_ones(pack):
    detect = pack[0].NODE_CLASS_MAPPINGS["GPENDetectFaces"]
    assert detect.RETURN_NAMES == ("faces", "aligned_crops", "face_count", "annotated", "faces_json")
    assert detect.RETURN_TYPES[3:] == ("IMAGE", "STRING")
    restore = pack[0].NODE_CLASS_MAPPINGS["GPENFaceRestore"]
    assert restore.RETURN_NAMES == ("image", "face_mask", "face_count", "annotated", "faces_json")
    for cls in (detect, restore):
        optional = cls.INPUT_TYPES()["optional"]
        assert optional["rotations"][1]["default"] == "when_missing" and optional["region_mask"][0] == "MASK"
    assert pack[0].NODE_CLASS_MAPPINGS["GPENPasteFaces"].INPUT_TYPES()["optional"]["protect_mask"][0] == "MASK"


def test_detect_faces_on_a_turned_photo(pack, detector):
    turned = torch.rot90(comfy_image("grace_hopper.jpg"), 1, dims=(1, 2))  # [1, 512, 600, 3]
    _, _, none, *_ = node(pack, "GPENDetectFaces").detect(image=turned, face_detector=detector, rotations="none",
                                                          **DETECT)
    faces, _, count, annotated, text = node(pack, "GPENDetectFaces").detect(image=turned, face_detector=detector,
                                                                            **DETECT)
    assert none == 0 and count == 1 and faces.faces[0].rotation == 270
    (record,) = json.loads(text)["images"][0]["faces"]
    assert record["rotation"] == 270 and record["status"] == "selected" and record["index"] == 0
    assert annotated.shape == turned.shape and not torch.equal(annotated, turned)


def test_region_mask_and_preview_in_detect_faces(pack, detector):
    image = two_faces()
    region = torch.zeros(1, 600, 1024)
    region[:, 100:500, 600:1000] = 1  # the right face only
    faces, _, count, annotated, text = node(pack, "GPENDetectFaces").detect(image=image, face_detector=detector,
                                                                            region_mask=region, **DETECT)
    assert count == 1 and faces.faces[0].box[0] > 512
    data = json.loads(text)
    assert data["detector"] == "yunet_opencv" and data["rotations"] == "when_missing"
    statuses = [(f["index"], f["status"]) for f in data["images"][0]["faces"]]
    assert statuses == [(0, "selected"), (None, "skipped")]
    assert annotated.shape == image.shape
    changed = (annotated != image).any(-1)[0]  # [H, W]
    assert changed[:, :512].any() and changed[:, 512:].any()  # both faces drawn, the skipped one too
    _, _, loose, *_ = node(pack, "GPENDetectFaces").detect(image=image, face_detector=detector, region_mask=region,
                                                           region_overlap=0.0, **DETECT)
    assert loose == 2


def test_all_in_one_with_region_and_protect_masks(pack, gpen_model, detector):
    image = two_faces()
    region = torch.zeros(1, 600, 1024)
    region[:, 100:500, 600:1000] = 1
    protect = torch.zeros(1, 600, 1024)
    protect[:, 180:210, 700:800] = 1  # over the right face's eyes
    out, mask, count, annotated, text = node(pack, "GPENFaceRestore").run(
        image=image, gpen_model=gpen_model, face_detector=detector, select="all", strength=1.0, template="gpen",
        region_mask=region, protect_mask=protect, **PASTE)
    assert count == 1
    assert torch.equal(out[:, :, :512], image[:, :, :512])  # the face outside the region: untouched
    assert torch.equal(out[:, 180:210, 700:800], image[:, 180:210, 700:800])  # protected: untouched
    assert mask[0, 180:210, 700:800].max() == 0 and mask[0, 260, 740] > 0.9
    assert (out[0, 250:270, 700:780] != image[0, 250:270, 700:780]).any()  # the rest of the face: restored
    records = json.loads(text)["images"][0]["faces"]
    assert [(r["status"], r["model_size"], r["output_scale"]) for r in records] == [
        ("restored", 256, 1), ("skipped", None, None)]
    assert annotated.shape == image.shape


def test_paste_faces_protect_mask(pack, gpen_model, detector):
    image = comfy_image("grace_hopper.jpg")
    faces, *_ = node(pack, "GPENDetectFaces").detect(image=image, face_detector=detector, **DETECT)
    restored, _ = node(pack, "GPENRestoreFaces").restore(gpen_model=gpen_model, faces=faces, mode="restore",
                                                         strength=1.0)
    protect = torch.zeros(1, 300, 256)  # half size: resized to the image
    protect[:, 90:110, 100:160] = 1
    out, mask = node(pack, "GPENPasteFaces").paste(image=image, faces=restored, protect_mask=protect,
                                                   **{**PASTE, "output_scale": "2"})
    assert out.shape == (1, 1200, 1024, 3)
    assert mask[0, 360:440, 400:640].max() == 0  # 4x the half-size region at the 2x output
    plain, _ = node(pack, "GPENPasteFaces").paste(image=image, faces=restored, **{**PASTE, "output_scale": "2"})
    assert not torch.equal(plain[0, 360:440, 400:640], out[0, 360:440, 400:640])
