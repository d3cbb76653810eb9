"""The example workflows (example_workflows/*.json, ComfyUI's UI format) validate against the node definitions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO_ROOT, import_pack

DOUBLE = Path(__file__).resolve().parent / "comfy_double"
WORKFLOWS = sorted((REPO_ROOT / "example_workflows").glob("*.json"))
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
MODEL_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")

# The ComfyUI core nodes the examples use: socket inputs (name -> type), number of widget values the UI stores
# (LoadImage/LoadVideo keep a second value for their upload button), output types. The end-to-end test checks this
# table against a real ComfyUI's /object_info.
CORE_NODES = {
    "LoadImage": ({}, 2, ["IMAGE", "MASK"]),
    "SaveImage": ({"images": "IMAGE"}, 1, []),
    "PreviewImage": ({"images": "IMAGE"}, 0, []),
    "MaskToImage": ({"mask": "MASK"}, 0, ["IMAGE"]),
    "LoadVideo": ({}, 2, ["VIDEO"]),
    "GetVideoComponents": ({"video": "VIDEO"}, 0, ["IMAGE", "AUDIO", "FLOAT"]),
    "CreateVideo": ({"images": "IMAGE", "audio": "AUDIO"}, 1, ["VIDEO"]),
    "SaveVideo": ({"video": "VIDEO"}, 3, []),
}
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # notes live in the UI only; never sent to the server


@pytest.fixture(scope="module")
def mappings(tmp_path_factory):
    sys.path.insert(0, str(DOUBLE))
    try:
        import folder_paths

        folder_paths.models_dir = str(tmp_path_factory.mktemp("models"))
        yield import_pack("comfyui-gpen-workflows").NODE_CLASS_MAPPINGS
    finally:
        sys.path.remove(str(DOUBLE))


def split_inputs(cls) -> tuple[dict, list]:
    """(socket inputs name -> (type, optional), widget inputs [(name, kind, options)]) in the UI's order."""
    sockets, widgets = {}, []
    spec = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, (kind, *rest) in spec.get(section, {}).items():
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                widgets.append((name, kind, rest[0] if rest else {}))
            else:
                sockets[name] = (kind, section == "optional")
    return sockets, widgets


def widget_problem(name: str, kind, options: dict, value) -> str | None:
    if isinstance(kind, list):
        if name == "model_name":  # the list is whatever files the user has: check the kind of file
            return None if isinstance(value, str) and value.endswith(MODEL_SUFFIXES) else f"not a model file: {value!r}"
        return None if value in kind else f"{value!r} not one of {kind}"
    if kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not a boolean"
    if kind == "STRING":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "INT" and not isinstance(value, int)):
            return f"{value!r} is not {kind}"
        low, high = options.get("min", float("-inf")), options.get("max", float("inf"))
        return None if low <= value <= high else f"{value} outside {low}..{high}"
    return f"unexpected widget kind {kind}"


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_the_five_examples_are_there_with_thumbnails():
    names = {p.stem for p in WORKFLOWS}
    assert names == {"gpen_basic_restore_2048", "gpen_step_by_step", "gpen_after_face_swap", "gpen_video_frames",
                     "gpen_colorize_old_photo"}
    for path in WORKFLOWS:
        thumb = path.with_suffix(".jpg")
        assert thumb.is_file(), f"{path.name} has no thumbnail {thumb.name}"
        with Image.open(thumb) as image:
            assert image.format == "JPEG" and min(image.size) >= 256, thumb.name


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_validates_against_the_node_definitions(path, mappings):
    data = load(path)
    assert data["version"] == 0.4 and data["last_node_id"] >= len(data["nodes"])
    nodes = {node["id"]: node for node in data["nodes"]}
    assert len(nodes) == len(data["nodes"]), "duplicate node ids"
    links = {link[0]: link for link in data["links"]}
    assert len(links) == len(data["links"]) and data["last_link_id"] >= max(links, default=0)

    for node in data["nodes"]:
        kind, where = node["type"], f"{path.name} node {node['id']} ({node['type']})"
        if kind in FRONTEND_ONLY:
            continue
        if kind in CORE_NODES:
            sockets_spec, widget_count, outputs = CORE_NODES[kind]
            sockets = {name: (t, True) for name, t in sockets_spec.items()}
            assert len(node.get("widgets_values", [])) == widget_count, where
        else:
            assert kind in mappings, f"{where}: not a node of this pack nor a known core node"
            cls = mappings[kind]
            sockets, widgets = split_inputs(cls)
            outputs = list(cls.RETURN_TYPES)
            values = node["widgets_values"]
            assert len(values) == len(widgets), f"{where}: {len(values)} widget values for {len(widgets)} widgets"
            for (name, wkind, options), value in zip(widgets, values):
                problem = widget_problem(name, wkind, options, value)
                assert problem is None, f"{where}.{name}: {problem}"
            for name, (_t, optional) in sockets.items():
                linked = [i for i in node["inputs"] if i["name"] == name and i["link"] is not None]
                assert optional or linked, f"{where}: required input {name} is not connected"
        assert [o["type"] for o in node["outputs"]] == outputs, where
        for slot in node["inputs"]:
            if "widget" in slot:
                continue
            assert slot["name"] in sockets and slot["type"] == sockets[slot["name"]][0], f"{where}: {slot}"
            if slot["link"] is not None:
                assert links[slot["link"]][3] == node["id"], where

    for link_id, origin, out_slot, target, in_slot, kind in data["links"]:
        source, dest = nodes[origin], nodes[target]
        assert source["outputs"][out_slot]["type"] == kind and link_id in source["outputs"][out_slot]["links"]
        assert dest["inputs"][in_slot]["link"] == link_id and dest["inputs"][in_slot]["type"] == kind


def test_examples_use_every_node_of_the_pack(mappings):
    used = {node["type"] for path in WORKFLOWS for node in load(path)["nodes"]}
    assert set(mappings) <= used, f"never shown in an example: {sorted(set(mappings) - used)}"


def test_examples_ask_for_the_right_models():
    def widgets(name, kind):
        return [n["widgets_values"] for n in load(REPO_ROOT / "example_workflows" / f"{name}.json")["nodes"]
                if n["type"] == kind]

    assert widgets("gpen_basic_restore_2048", "GPENLoadModel")[0][0] == "GPEN-BFR-2048.pth"
    assert widgets("gpen_colorize_old_photo", "GPENLoadModel")[0][0] == "GPEN-Colorization-1024.pth"
    assert widgets("gpen_colorize_old_photo", "GPENRestoreFaces")[0][0] == "colorize"
    assert widgets("gpen_video_frames", "GPENDetectFaces")[0][7] > 0  # video: tracking and landmark smoothing
    assert widgets("gpen_step_by_step", "GPENDetectFaces")[0][7] == 0  # one photo: no video mode
    swap = load(REPO_ROOT / "example_workflows" / "gpen_after_face_swap.json")
    assert any("placeholder" in g["title"].lower() for g in swap["groups"])


def test_examples_use_the_small_detector_and_say_where_it_comes_from():
    """The missing-models dialog of ComfyUI's frontend reads ``properties.models`` (name, url, directory)."""
    for path in WORKFLOWS:
        for node in load(path)["nodes"]:
            if node["type"] == "GPENLoadFaceDetector":
                assert node["widgets_values"][0] == "yunet_opencv", path.name
                (model,) = node["properties"]["models"]
                assert model["name"] == "face_detection_yunet_2023mar.onnx" and model["directory"] == "facedetection"
                assert model["url"].startswith("https://github.com/opencv/opencv_zoo/") and \
                    model["url"].endswith("/" + model["name"])
