"""The example workflows (example_workflows/*.json, ComfyUI's UI format) validate against the node definitions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, import_pack
from helpers import CORE_NODES, FRONTEND_ONLY, WIDGET_TYPES
from PIL import Image

DOUBLE = Path(__file__).resolve().parent / "comfy_double"
WORKFLOWS = sorted((REPO_ROOT / "example_workflows").glob("*.json"))
MODEL_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


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
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or (kind == "INT" and not isinstance(value, int))):
            return f"{value!r} is not {kind}"
        low, high = options.get("min", float("-inf")), options.get("max", float("inf"))
        return None if low <= value <= high else f"{value} outside {low}..{high}"
    return f"unexpected widget kind {kind}"


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_the_six_examples_are_there_with_thumbnails():
    names = {p.stem for p in WORKFLOWS}
    # ComfyUI's frontend titles a custom node's template with its file name (no index.json for custom nodes), so the
    # names are the titles the template browser shows
    assert names == {"GPEN Basic Restore 2048", "GPEN Step by Step", "GPEN After Face Swap", "GPEN Video Frames",
                     "GPEN Colorize Old Photo", "GPEN Group Photo"}
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

    assert widgets("GPEN Basic Restore 2048", "GPENLoadModel")[0][0] == "GPEN-BFR-2048.pth"
    assert widgets("GPEN Colorize Old Photo", "GPENLoadModel")[0][0] == "GPEN-Colorization-1024.pth"
    assert widgets("GPEN Colorize Old Photo", "GPENRestoreFaces")[0][0] == "colorize"
    assert widgets("GPEN Video Frames", "GPENDetectFaces")[0][7] > 0  # video: tracking and landmark smoothing
    assert widgets("GPEN Step by Step", "GPENDetectFaces")[0][7] == 0  # one photo: no video mode
    swap = load(REPO_ROOT / "example_workflows" / "GPEN After Face Swap.json")
    assert any("placeholder" in g["title"].lower() for g in swap["groups"])
    # a group photo: GPEN-BFR-512 and GPEN-BFR-2048 in a GPEN Model Set, each face to the model of its size
    assert [w[0] for w in widgets("GPEN Group Photo", "GPENLoadModel")] == ["GPEN-BFR-512.pth", "GPEN-BFR-2048.pth"]
    assert widgets("GPEN Group Photo", "GPENModelSet") == [["smallest_sufficient"]]


# The official download addresses of the GPEN files the examples ask for (README "Model files"). The frontend offers a
# Download button only for huggingface.co / civitai.com .safetensors files, so these show as "download not allowed
# from <address>": the user sees where to get the file and downloads it himself, as the weights' terms require.
GPEN_SOURCES = {
    "GPEN-BFR-512.pth": "https://public-vigen-video.oss-cn-shanghai.aliyuncs.com/robin/models/GPEN-BFR-512.pth",
    "GPEN-Colorization-1024.pth":
        "https://public-vigen-video.oss-cn-shanghai.aliyuncs.com/robin/models/GPEN-Colorization-1024.pth",
    "GPEN-BFR-2048.pth": "https://modelscope.cn/models/damo/cv_gpen_image-portrait-enhancement-hires",
}


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_model_metadata_is_what_the_frontend_uses(path):
    """ComfyUI's frontend reads ``properties.models`` entries ({name, url, directory}) only when ``name`` equals one
    of the node's widget values (``getSelectedModelsMetadata``), and reports the file missing when ``directory`` does
    not list it. Every GPEN loader names its file with the official address; the detector, whose default YuNet ships
    with the pack, names nothing."""
    for node in load(path)["nodes"]:
        models = node.get("properties", {}).get("models")
        where = f"{path.name} node {node['id']} ({node['type']})"
        if node["type"] == "GPENLoadModel":
            (model,) = models
            assert set(model) == {"name", "url", "directory"}, where
            assert model["name"] == node["widgets_values"][0] and model["directory"] == "gpen", where
            assert model["url"] == GPEN_SOURCES[model["name"]], where
        else:
            assert models is None, f"{where}: no model metadata expected"
        if node["type"] == "GPENLoadFaceDetector":
            assert node["widgets_values"][0] == "yunet_opencv", where  # the default: nothing to download
        for model in models or []:
            assert model["name"] in node["widgets_values"], f"{where}: {model['name']} is no widget value"


def test_notes_tell_the_truth_about_models_and_output_scale():
    """Every example's Note says where its GPEN files go and that the user downloads them; the basic one says what
    output_scale auto does (face_pipeline/paste/scale.py: the smaller the face, the larger the scale)."""
    for path in WORKFLOWS:
        data = load(path)
        models = [n["widgets_values"][0] for n in data["nodes"] if n["type"] == "GPENLoadModel"]
        text = " ".join(n["widgets_values"][0] for n in data["nodes"] if n["type"] in FRONTEND_ONLY)
        where = (f"Model: {models[0]} goes in models/gpen" if len(models) == 1 else
                 f"Models: {' and '.join(models)} go in models/gpen")
        assert where in text and "never downloaded for you" in text, path.name
    basic = " ".join(n["widgets_values"][0] for n in load(REPO_ROOT / "example_workflows" /
                                                           "GPEN Basic Restore 2048.json")["nodes"]
                     if n["type"] == "Note")
    assert "when the faces are big" not in basic
    assert "The smaller the face, the larger the scale" in basic


# The frontend's minimum node height (LiteGraph computeSize in ComfyUI_frontend 1.27, measured in the real frontend
# for every node the examples use): 20 px per row of sockets (inputs or outputs, whichever are more), 24 px per
# widget plus 8 when there are widgets, and 6. A node stored smaller is drawn at that height; the title bar (30 px) is
# drawn above ``pos``, and above that, for a custom node, the badge naming its pack (about 20 px).
SLOT_HEIGHT, WIDGET_HEIGHT, TITLE_HEIGHT, BADGE_HEIGHT = 20, 24, 30, 20
NOTE_MIN_HEIGHT = 88


def drawn_rectangle(node: dict) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of ``node`` as the frontend draws it, title bar and pack badge included."""
    (x, y), (width, height) = node["pos"], node["size"]
    if node["type"] in FRONTEND_ONLY:
        minimum = NOTE_MIN_HEIGHT
    else:
        sockets = [slot for slot in node.get("inputs", []) if "widget" not in slot]
        widgets = len(node.get("widgets_values", []))
        minimum = SLOT_HEIGHT * max(len(sockets), len(node.get("outputs", []))) + 6
        minimum += WIDGET_HEIGHT * widgets + 8 if widgets else 0
    badge = 0 if node["type"] in CORE_NODES or node["type"] in FRONTEND_ONLY else BADGE_HEIGHT
    return x, y - TITLE_HEIGHT - badge, x + width, y + max(height, minimum)


def test_drawn_height_matches_the_frontend():
    """The heights the real frontend gave these nodes (pos and size read back from ComfyUI_frontend 1.27.10 after
    loading the examples; the nodes stored smaller were grown to these)."""
    measured = {("GPENFaceRestore", 330): 422, ("GPENLoadFaceDetector", 120): 130, ("GPENDetectFaces", 300): 378,
                ("GPENPasteFaces", 230): 238, ("GPENLoadModel", 146): 146, ("GPENRestoreFaces", 150): 150}
    for path in WORKFLOWS:
        for node in load(path)["nodes"]:
            key = (node["type"], node["size"][1])
            if key in measured:
                assert drawn_rectangle(node)[3] - node["pos"][1] == measured[key], key


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_no_node_covers_another(path):
    nodes = load(path)["nodes"]
    rectangles = [(node, drawn_rectangle(node)) for node in nodes]
    for i, (a, (left_a, top_a, right_a, bottom_a)) in enumerate(rectangles):
        for b, (left_b, top_b, right_b, bottom_b) in rectangles[i + 1:]:
            overlap_x = min(right_a, right_b) - max(left_a, left_b)
            overlap_y = min(bottom_a, bottom_b) - max(top_a, top_b)
            assert overlap_x <= 0 or overlap_y <= 0, (
                f"{path.name}: node {a['id']} ({a['type']}) and node {b['id']} ({b['type']}) overlap by "
                f"{overlap_x} x {overlap_y} px as the frontend draws them")
