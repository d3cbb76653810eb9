"""The GPEN Model Set node (issue 25, the ComfyUI side): several GPEN models in one ``GPEN_MODEL`` socket, each face
restored by the model of its size in the output (``face_pipeline/restoration/routing.py``), in the all-in-one node
and in Detect -> Restore -> Paste; with the ComfyUI test double.

The models are the compact 256 and 512 vectors of tests/data (random weights: the faces come out as noise, but the
two models give different pixels, so a face restored by the wrong one is seen). The photo is Grace Hopper beside a
smaller astronaut: at output scale 1 Grace's aligned crop covers about 352 output pixels (the 512 model) and the
astronaut's about 145 (the 256 model); at scale 2 the astronaut's is about 289 (the 512 model)."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest
import torch
from conftest import DETECT, comfy_image, data_file, node
from safetensors.torch import load_file

pytestmark = pytest.mark.usefixtures("like_comfyui")

PASTE = dict(mask_type="rounded_rect", feather=0.1, color_correction=True, max_output_size=8192)
SMALL, LARGE = "GPEN-test-256.pth", "GPEN-test-512.pth"


def pack_module(pack, name: str):
    """A module of the pack under test (``nodes.comfy_bridge``, ``nodes.handles``, ...)."""
    return sys.modules[f"{pack[0].__name__}.{name}"]


def sent(pack) -> list[str]:
    """The warnings the pack sent to the frontend (the test double's PromptServer), and forget them."""
    server = pack_module(pack, "nodes.comfy_bridge").PromptServer.instance
    messages, server.messages = server.messages, []
    return [data["message"] for _event, data, _client in messages]


@pytest.fixture(scope="module")
def large_model(pack):
    """Load GPEN Model's handle of the compact 512 vector, put in the models folder beside the 256 one."""
    _, models = pack
    weights = load_file(str(data_file("gpen", "compact", "compact_512_cm2_n0.0625_s64.safetensors")))
    torch.save(weights, models / "gpen" / LARGE)
    with torch.inference_mode():
        return node(pack, "GPENLoadModel").load(model_name=LARGE, precision="auto")[0]


def model_set(pack, *models, model_routing: str = "smallest_sufficient", **more):
    inputs = dict(zip(("model_1", "model_2"), models))
    return node(pack, "GPENModelSet").combine(**inputs, model_routing=model_routing, **more)[0]


@pytest.fixture(scope="module")
def group_photo():
    """Grace Hopper (600 px tall) and, beside her, the astronaut shrunk to 400 px: two faces of different sizes."""
    canvas = torch.full((1, 600, 928, 3), 0.5)
    canvas[:, :, :512] = comfy_image("grace_hopper.jpg")
    canvas[:, 100:500, 528:] = comfy_image("astronaut.jpg", size=(400, 400))
    return canvas


def all_in_one(pack, gpen_model, detector, image, output_scale="1"):
    return node(pack, "GPENFaceRestore").run(image=image, gpen_model=gpen_model, face_detector=detector,
                                             select="all", strength=1.0, template="gpen", output_scale=output_scale,
                                             **PASTE)


def detect(pack, detector, image, **options):
    return node(pack, "GPENDetectFaces").detect(image=image, face_detector=detector, **{**DETECT, **options})[0]


def restore(pack, gpen_model, faces, **options):
    return node(pack, "GPENRestoreFaces").restore(gpen_model=gpen_model, faces=faces, mode="restore", strength=1.0,
                                                  **options)


# ------------------------------------------------------------------------------------------------------ the node
def test_the_model_set_node_takes_two_to_four_models_and_gives_a_gpen_model(pack):
    module = pack[0]
    cls = module.NODE_CLASS_MAPPINGS["GPENModelSet"]
    assert module.NODE_DISPLAY_NAME_MAPPINGS["GPENModelSet"] == "GPEN Model Set"
    assert cls.CATEGORY == module.NODE_CLASS_MAPPINGS["GPENLoadModel"].CATEGORY
    spec = cls.INPUT_TYPES()
    assert list(spec["required"]) == ["model_1", "model_2", "model_routing"]
    assert list(spec["optional"]) == ["model_3", "model_4"]
    assert all(spec[part][name][0] == "GPEN_MODEL" for part, name in [("required", "model_1"), ("required", "model_2"),
                                                                      ("optional", "model_3"), ("optional", "model_4")])
    kind, options = spec["required"]["model_routing"]
    assert kind == ["smallest_sufficient", "largest"] and options["default"] == "smallest_sufficient"
    assert "smallest model at least its size" in options["tooltip"]
    assert "GPEN-BFR-512 + GPEN-BFR-2048" in cls.DESCRIPTION and "Restore mode only" in cls.DESCRIPTION
    # its output plugs into the gpen_model inputs that take Load GPEN Model's: the same socket type
    assert cls.RETURN_TYPES == module.NODE_CLASS_MAPPINGS["GPENLoadModel"].RETURN_TYPES == ("GPEN_MODEL",)
    for user in ("GPENFaceRestore", "GPENRestoreFaces"):
        assert module.NODE_CLASS_MAPPINGS[user].INPUT_TYPES()["required"]["gpen_model"][0] == "GPEN_MODEL"
    assert cls.VALIDATE_INPUTS(model_routing="largest") is True
    assert cls.VALIDATE_INPUTS(model_routing="biggest") == ("model_routing must be one of smallest_sufficient, "
                                                            "largest; got 'biggest'")
    # Restore Faces' scale for the routing: appended after its first optional input (then temporal_smoothing, issue
    # 25), so saved workflows keep their widget order
    restore_spec = module.NODE_CLASS_MAPPINGS["GPENRestoreFaces"].INPUT_TYPES()
    assert list(restore_spec["optional"]) == ["inpaint_mask", "output_scale", "temporal_smoothing"]
    scale_kind, scale_options = restore_spec["optional"]["output_scale"]
    assert scale_kind == ["1", "2", "4", "auto"] and scale_options["default"] == "1"
    assert scale_options["tooltip"].startswith("With a GPEN Model Set: the output scale Paste Faces will use")


def test_a_set_holds_its_members_smallest_first_with_its_rule(pack, gpen_model, large_model):
    handles = pack_module(pack, "nodes.handles")
    models = model_set(pack, large_model, gpen_model, model_routing="largest")
    assert isinstance(models, handles.GPENModelSetHandle)
    assert models.members == (gpen_model, large_model) and models.largest is large_model
    assert models.model_routing == "largest" and models.file_names == f"{SMALL}, {LARGE}"
    # one model is a set of itself for the code that takes either
    assert gpen_model.members == (gpen_model,) and gpen_model.largest is gpen_model
    # a set connected as a model gives its members
    _, folder = pack
    torch.save(load_file(str(data_file("gpen", "compact", "compact_2048_cm2_n0.125_s64.safetensors"))),
               folder / "gpen" / "GPEN-test-2048.pth")
    huge = node(pack, "GPENLoadModel").load(model_name="GPEN-test-2048.pth", precision="auto")[0]
    as_members = model_set(pack, huge, models)
    assert as_members.members == (gpen_model, large_model, huge) and as_members.model_routing == "smallest_sufficient"


def test_a_set_refuses_two_models_of_one_size_and_models_of_other_modes(pack, gpen_model, large_model):
    with pytest.raises(ValueError, match=r"the models of a set must differ in size \(each face goes to the model of "
                                         r"its size\), but GPEN-test-256.pth, GPEN-test-256.pth are all 256: give one "
                                         r"model per size"):
        model_set(pack, gpen_model, gpen_model)
    colorize = dataclasses.replace(large_model, file_name="GPEN-Colorization-1024.pth")
    with pytest.raises(ValueError, match=r"a GPEN Model Set is for restore mode only \(each face to the GPEN-BFR "
                                         r"model of its size\), but GPEN-Colorization-1024.pth \(colorize\) looks like "
                                         r"a model for another mode by its name"):
        model_set(pack, gpen_model, colorize)
    inpaint = dataclasses.replace(large_model, file_name="GPEN-Inpainting-1024.pth")
    with pytest.raises(ValueError, match=r"GPEN-Inpainting-1024.pth \(inpaint\) looks like"):
        model_set(pack, gpen_model, large_model, model_3=inpaint)
    with pytest.raises(ValueError, match="a model set holds 1 to 4 models, got 5"):
        model_set(pack, gpen_model, large_model, model_3=model_set(pack, gpen_model, large_model),
                  model_4=large_model)


def test_a_set_is_refused_in_colorize_and_inpaint_modes(pack, gpen_model, large_model, detector, group_photo):
    faces = detect(pack, detector, group_photo)
    for mode in ("colorize", "inpaint"):
        with pytest.raises(ValueError, match=rf"mode '{mode}' with a GPEN Model Set \(GPEN-test-256.pth, "
                                             rf"GPEN-test-512.pth\): a set is for restore mode only"):
            node(pack, "GPENRestoreFaces").restore(gpen_model=model_set(pack, gpen_model, large_model), faces=faces,
                                                   mode=mode, strength=1.0, inpaint_mask=torch.zeros((1, 600, 928)))


# ------------------------------------------------------------------------------------------------ the routing
def test_the_all_in_one_and_the_step_nodes_route_each_face_to_its_model(pack, gpen_model, large_model, detector,
                                                                        group_photo):
    mm, utils = pack_module(pack, "nodes.comfy_bridge").mm, pack_module(pack, "nodes.comfy_bridge").comfy.utils
    models = model_set(pack, gpen_model, large_model)
    expected, mask, count, *_ = all_in_one(pack, models, detector, group_photo)
    assert count == 2 and expected.shape == group_photo.shape

    faces = detect(pack, detector, group_photo)
    mm.load_calls.clear()
    utils.updates.clear()
    restored, preview = restore(pack, models, faces, output_scale="1")
    assert restored.face_sizes == (512, 256) and restored.size == 512  # Grace's face to the 512, the astronaut's
    # each model placed by ComfyUI when its faces come (smallest first), with room for its own faces
    bridge = pack_module(pack, "nodes.comfy_bridge")
    assert [(calls, required, full) for calls, required, _minimum, full in mm.load_calls] == [
        ([gpen_model.patcher], bridge.restore_step_bytes(gpen_model, 1), True),
        ([large_model.patcher], bridge.restore_step_bytes(large_model, 1), True)]
    assert utils.updates[-1] == (2, 2)  # one progress bar over both models
    pasted, pasted_mask = node(pack, "GPENPasteFaces").paste(image=group_photo, faces=restored, output_scale="1",
                                                             **PASTE)
    assert torch.equal(pasted, expected) and torch.equal(pasted_mask, mask)  # the same image both ways
    assert sent(pack) == []  # the paste's scale is the one the faces were routed for: nothing to say

    # each face restored as its model alone restores it (the same face, alone, through Restore Faces)
    for face, single, side in ((0, large_model, 512), (1, gpen_model, 256)):
        alone = restore(pack, single, detect(pack, detector, group_photo, select="indices", indices=str(face)))[0]
        assert torch.equal(restored.restored[face, :, :side, :side], alone.restored[0])
        assert torch.equal(restored.crops[face, :, :side, :side], alone.crops[0])
    # the preview: every face at the largest side, the astronaut's 256 crop resized
    assert preview.shape == (2, 512, 512, 3)
    assert torch.equal(preview[0], restored.restored[0].permute(1, 2, 0))
    resized = torch.nn.functional.interpolate(restored.restored[1:, :, :256, :256], size=(512, 512),
                                              mode="bilinear", align_corners=False).clamp(0, 1)
    assert torch.allclose(preview[1], resized[0].permute(1, 2, 0))


def test_largest_gives_the_largest_model_s_bytes(pack, gpen_model, large_model, detector, group_photo):
    alone, _, _, _, alone_json = all_in_one(pack, large_model, detector, group_photo)
    largest, _, _, _, faces_json = all_in_one(pack, model_set(pack, gpen_model, large_model, model_routing="largest"),
                                              detector, group_photo)
    assert torch.equal(largest, alone)
    faces = [face for image in json.loads(faces_json)["images"] for face in image["faces"]]
    assert [(f["model"], f["model_size"]) for f in faces] == [(LARGE, 512), (LARGE, 512)]
    faces = detect(pack, detector, group_photo)
    steps = restore(pack, model_set(pack, gpen_model, large_model, model_routing="largest"), faces)[0]
    assert steps.face_sizes is None and torch.equal(steps.restored, restore(pack, large_model, faces)[0].restored)


def test_the_faces_json_and_the_preview_name_each_face_s_model(pack, gpen_model, large_model, detector, group_photo):
    _, _, _, annotated, faces_json = all_in_one(pack, model_set(pack, large_model, gpen_model), detector, group_photo)
    report = json.loads(faces_json)
    faces = [face for image in report["images"] for face in image["faces"]]
    assert [(f["model"], f["model_size"], f["status"]) for f in faces] == [(LARGE, 512, "restored"),
                                                                           (SMALL, 256, "restored")]
    assert report["model_size"] == 512 and report["output_scale"] == 1  # the top level: the largest model
    # one model: every face by its file's name; no model in the preview's labels
    _, _, _, single_annotated, single_json = all_in_one(pack, gpen_model, detector, group_photo)
    single = [face for image in json.loads(single_json)["images"] for face in image["faces"]]
    assert [(f["model"], f["model_size"]) for f in single] == [(SMALL, 256), (SMALL, 256)]
    # a set's labels also say which model restores each face ('#0 0.94 -> 512'): only the labels above the faces
    # (box tops at y = 120 and 151) differ from the single model's preview
    rows = (annotated != single_annotated).any(-1)[0].any(1).nonzero()
    assert rows.numel() and int(rows.max()) < 151


def test_comfyui_places_each_member_and_keeps_them_for_the_paste(pack, gpen_model, large_model, detector,
                                                                 group_photo, monkeypatch):
    bridge = pack_module(pack, "nodes.comfy_bridge")
    comfy_pipeline = pack_module(pack, "nodes.comfy_pipeline")
    models = model_set(pack, gpen_model, large_model)
    host = comfy_pipeline.comfy_pipeline(gpen_model=models).host
    bridge.mm.load_calls.clear()
    assert host.model_for(large_model.patcher.model, 3) is large_model.patcher.model
    assert host.model_for(gpen_model.patcher.model, 0) is gpen_model.patcher.model  # no face: not loaded
    assert [calls for calls, *_ in bridge.mm.load_calls] == [[large_model.patcher]]
    with pytest.raises(RuntimeError, match="not among GPEN-test-256.pth, GPEN-test-512.pth: a bug"):
        host.model_for(torch.nn.Linear(1, 1), 1)

    kept = []
    real = bridge.load_on_device

    def recording(patchers, memory_required=0, keep=()):
        kept.append((list(keep), memory_required))
        return real(patchers, memory_required, keep)

    monkeypatch.setattr(bridge, "load_on_device", recording)
    bridge.mm.load_calls.clear()
    all_in_one(pack, models, detector, group_photo)
    ((keep, required),) = [k for k in kept if k[0]]  # the paste's room, made once, both members kept beside it
    assert keep == [gpen_model.patcher, large_model.patcher]
    assert required >= max(bridge.restore_step_bytes(gpen_model, 1), bridge.restore_step_bytes(large_model, 1))
    loaded = [calls[0] for calls, *_ in bridge.mm.load_calls]
    assert large_model.patcher in loaded and gpen_model.patcher in loaded  # each placed for its own faces
    kept.clear()
    all_in_one(pack, models, detector, group_photo, output_scale="2")  # both faces to the 512: it alone is kept
    ((keep, _),) = [k for k in kept if k[0]]
    assert keep == [large_model.patcher]


def test_paste_faces_says_when_restore_faces_routed_for_a_smaller_scale(pack, gpen_model, large_model, detector,
                                                                        group_photo):
    models = model_set(pack, gpen_model, large_model)
    faces = detect(pack, detector, group_photo)
    sent(pack)
    at_1 = restore(pack, models, faces, output_scale="1")[0]
    assert at_1.face_sizes == (512, 256)
    node(pack, "GPENPasteFaces").paste(image=group_photo, faces=at_1, output_scale="2", **PASTE)
    (message,) = sent(pack)
    assert message.startswith("1 face(s) restored by a smaller model of the GPEN Model Set are pasted larger than "
                              "that model's size at output scale 2 (a face of 289 px by the 256 model): Restore "
                              "Faces routed them for a smaller output_scale. Set Restore Faces' output_scale to this "
                              "paste's (2)")
    # routed for 2x: both faces to the 512 model, as the all-in-one node at 2x
    at_2 = restore(pack, models, faces, output_scale="2")[0]
    assert at_2.face_sizes is None and at_2.size == 512
    pasted, _ = node(pack, "GPENPasteFaces").paste(image=group_photo, faces=at_2, output_scale="2", **PASTE)
    assert sent(pack) == [] and torch.equal(pasted, all_in_one(pack, models, detector, group_photo, "2")[0])


def test_auto_scale_is_the_largest_model_s_and_no_face_is_no_work(pack, gpen_model, large_model, detector,
                                                                  group_photo):
    mm = pack_module(pack, "nodes.comfy_bridge").mm
    models = model_set(pack, gpen_model, large_model)
    # auto: the scale the 512 model alone needs (4x for the astronaut), at which both faces need the 512
    routed, _, _, _, faces_json = all_in_one(pack, models, detector, group_photo, output_scale="auto")
    alone = all_in_one(pack, large_model, detector, group_photo, output_scale="auto")[0]
    assert routed.shape == (1, 2400, 3712, 3) and torch.equal(routed, alone)
    assert {face["model"] for image in json.loads(faces_json)["images"] for face in image["faces"]} == {LARGE}
    # no face: nothing loaded, the image back unchanged, one black preview crop
    gray = torch.full((1, 64, 96, 3), 0.5)
    mm.load_calls.clear()
    out, _, count, *_ = all_in_one(pack, models, detector, gray)
    assert count == 0 and torch.equal(out, gray) and mm.load_calls == []
    restored, preview = restore(pack, models, detect(pack, detector, gray))
    assert restored.num_faces == 0 and preview.shape == (1, 512, 512, 3) and not preview.any()
    pasted, mask = node(pack, "GPENPasteFaces").paste(image=gray, faces=restored, output_scale="1", **PASTE)
    assert torch.equal(pasted, gray) and not mask.any()
