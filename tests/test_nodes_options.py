"""Every node's INPUT_TYPES() as saved workflows see it, held to a snapshot first taken at 6043ddb, before the option
inputs were built from the records (issue 24), and written again since only for deliberate changes (a node added at
the end, Faces from JSON; the score_threshold tooltip naming its floor; the temporal_smoothing inputs of GPEN Face
Restore and Restore Faces, issue 25, with the all-in-one's preset before them): input names and their order (the widget
order of a saved workflow), required or optional, type (combo lists included), default, bounds, step and tooltip.
And the helper that builds them (``nodes/inputs.py``): inputs from the records' fields, records back from a node's
values. With the ComfyUI test double.

Write the snapshot again (only for a deliberate change of a node's inputs): ``GPEN_WRITE_NODE_SNAPSHOT=1 python -m
pytest -q tests/test_nodes_options.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest
from conftest import DATA, import_pack

DOUBLE = Path(__file__).resolve().parent / "comfy_double"
SNAPSHOT = DATA / "node_inputs.json"
#: inputs whose combo list is the files in the user's model folders: recorded as "<files>"
FOLDER_LISTS = {("GPENLoadModel", "model_name")}


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    """The pack imported as ComfyUI imports it, over an empty models folder."""
    models = tmp_path_factory.mktemp("models")
    sys.path.insert(0, str(DOUBLE))
    for name in [n for n in sys.modules if n in ("folder_paths", "server") or n.split(".")[0] in ("comfy",
                                                                                                  "comfy_execution")]:
        del sys.modules[name]
    import folder_paths

    folder_paths.models_dir = str(models)
    yield import_pack("comfyui-gpen-inputs-snapshot")
    sys.path.remove(str(DOUBLE))


@pytest.fixture(scope="module")
def mappings(pack):
    return pack.NODE_CLASS_MAPPINGS


def node_inputs(mappings: dict) -> dict:
    """Node id -> {"required"/"optional": [[name, type, options], ...]} in declaration order (JSON-able)."""
    result = {}
    for node_id, cls in mappings.items():
        declared = cls.INPUT_TYPES()
        result[node_id] = {}
        for part in ("required", "optional"):
            rows = []
            for name, (kind, *rest) in declared.get(part, {}).items():
                kind = "<files>" if (node_id, name) in FOLDER_LISTS else kind
                rows.append([name, list(kind) if isinstance(kind, (list, tuple)) else kind, rest[0] if rest else {}])
            result[node_id][part] = rows
    return json.loads(json.dumps(result))  # tuples as lists, as the snapshot reads back


def test_every_node_input_is_as_before(mappings):
    now = node_inputs(mappings)
    if os.environ.get("GPEN_WRITE_NODE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(json.dumps(now, indent=1) + "\n")
    before = json.loads(SNAPSHOT.read_text())
    assert list(now) == list(before)  # node ids, in order
    for node_id in before:
        for part in ("required", "optional"):
            names_now, names_before = [row[0] for row in now[node_id][part]], [row[0] for row in before[node_id][part]]
            # new inputs only at the end of the optional ones (issue 26: the official options, the preset)
            assert names_now[:len(names_before)] == names_before and (
                part == "optional" or len(names_now) == len(names_before)), \
                f"{node_id} {part}: input names or their order changed"
            for row_now, row_before in zip(now[node_id][part], before[node_id][part]):
                if isinstance(row_before[1], list) and row_now[1][:len(row_before[1])] == row_before[1]:
                    row_now = [row_now[0], row_before[1], row_now[2]]  # choices added at the end keep old values
                # as JSON text: a default of 0 where it was 0.0 (INT for FLOAT) counts as a change
                assert json.dumps(row_now) == json.dumps(row_before), f"{node_id}.{row_now[0]} changed"


def test_the_snapshot_knows_every_widget():
    """The snapshot is not empty or partial: it holds the paste widgets with their bounds and tooltips."""
    before = json.loads(SNAPSHOT.read_text())
    paste = {name: (kind, extra) for name, kind, extra in before["GPENPasteFaces"]["required"]}
    assert paste["max_output_size"] == ("INT", {"default": 8192, "min": 512, "max": 16384, "step": 64,
                                                "tooltip": "With output_scale auto: the output's longest side "
                                                           "stays within this."})
    assert paste["output_scale"][0] == ["1", "2", "4", "auto"]
    assert len(before) == 8 and all(before[n]["required"] for n in before)


# ------------------------------------------------------------------------------------------------ nodes/inputs.py
def test_an_input_comes_from_its_field(pack):
    inputs = sys.modules[f"{pack.__name__}.nodes.inputs"]
    paste = sys.modules[f"{pack.__name__}.face_pipeline.paste.options"].PasteOptions
    detect = sys.modules[f"{pack.__name__}.face_pipeline.options"].DetectOptions
    assert inputs.option_input(paste, "feather") == ("FLOAT", {
        "default": 0.1, "min": 0.0, "max": 0.5,
        "tooltip": "Softness of the mask edge, as a fraction of the face size."})
    assert inputs.option_input(paste, "keep_gray")[0] == "BOOLEAN"
    assert inputs.option_input(paste, "max_output_size", min=512, max=16384, step=64)[1] == {
        "default": 8192, "min": 512, "max": 16384, "step": 64, "tooltip": "Cap of the output's long side."}
    assert inputs.option_input(paste, "scale", choices=("1", "2", "4", "auto"))[:1] == (["1", "2", "4", "auto"],)
    assert inputs.option_input(paste, "scale", choices=("1", "2", "4", "auto"))[1]["default"] == "1"
    assert inputs.option_input(detect, "min_face_size", kind="INT")[1]["default"] == 0  # an int, not 0.0
    with pytest.raises(ValueError, match=r"PasteOptions.max_output_size: a node may narrow the field's range "
                                         r"64..65536 but not widen it; got 64..100000"):
        inputs.option_input(paste, "max_output_size", max=100_000)
    with pytest.raises(ValueError, match=r"PasteOptions.scale: the choices \['8'\] are not among the field's"):
        inputs.option_input(paste, "scale", choices=("1", "8"))
    with pytest.raises(ValueError, match="PasteOptions.parsing_dir has neither choices, a range nor a boolean"):
        inputs.option_input(paste, "parsing_dir")


def test_the_records_come_back_from_a_node_s_values(pack):
    inputs = sys.modules[f"{pack.__name__}.nodes.inputs"]
    options = inputs.pipeline_options({"output_scale": "2", "feather": 0.2, "keep_gray": None, "max_faces": 3.0,
                                       "min_face_size": 10, "video": True},
                                      names={"output_scale": "scale", "video": "track"}, mode="colorize")
    assert options.paste.scale == 2 and options.paste.feather == 0.2 and options.paste.keep_gray is True  # default
    assert options.detect.max_faces == 3 and isinstance(options.detect.max_faces, int)
    assert options.detect.min_face_size == 10.0 and isinstance(options.detect.min_face_size, float)
    assert options.video.track is True and options.restore.mode == "colorize"
    assert inputs.pipeline_options({"output_scale": "auto"}, names={"output_scale": "scale"}).paste.scale == "auto"
    with pytest.raises(TypeError, match="'sharpness' is not an option of any stage"):
        inputs.pipeline_options({"sharpness": 1})
    with pytest.raises(ValueError, match="max_faces must be a whole number of at least 0, got 1.5"):
        inputs.pipeline_options({"max_faces": 1.5})  # refused by the record, not rounded


def test_every_paste_option_but_the_folder_is_a_node_input(pack):
    """The nodes expose each paste option once, by its field (``PASTE_NAMES`` for the renamed one): a new paste
    option is its record field, its use, and one line in ``PASTE_INPUTS`` / ``PASTE_OPTIONAL``."""
    paste_nodes = sys.modules[f"{pack.__name__}.nodes.paste_nodes"]
    paste = sys.modules[f"{pack.__name__}.face_pipeline.paste.options"].PasteOptions
    shown = {paste_nodes.PASTE_NAMES.get(name, name) for name in {**paste_nodes.PASTE_INPUTS,
                                                                  **paste_nodes.PASTE_OPTIONAL}}
    fields = {f.name for f in dataclasses.fields(paste)}
    # parsing_dir: found in ComfyUI's model folders by the node; the official steps: the all-in-one's preset
    assert fields - shown == {"parsing_dir", *paste_nodes.PRESET_ONLY}
    for node_id in ("GPENPasteFaces", "GPENFaceRestore"):
        declared = pack.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()
        assert {**paste_nodes.PASTE_INPUTS, **paste_nodes.PASTE_OPTIONAL}.items() <= {
            **declared["required"], **declared["optional"]}.items()
    # the all-in-one reaches the official steps through its preset, after every paste input (inputs added since
    # come after it: temporal_smoothing)
    assert list(pack.NODE_CLASS_MAPPINGS["GPENFaceRestore"].INPUT_TYPES()["optional"])[-2:] == ["preset",
                                                                                               "temporal_smoothing"]


def test_comfyui_is_a_host_of_the_pipeline(pack):
    """The nodes run the one ``Pipeline`` with ``ComfyHost`` (``face_pipeline.protocols.Host``), injected once."""
    comfy_pipeline = sys.modules[f"{pack.__name__}.nodes.comfy_pipeline"]
    protocols = sys.modules[f"{pack.__name__}.face_pipeline.protocols"]
    bridge = sys.modules[f"{pack.__name__}.nodes.comfy_bridge"]
    pipeline = comfy_pipeline.comfy_pipeline()
    assert isinstance(pipeline.host, protocols.Host) and isinstance(pipeline.host, comfy_pipeline.ComfyHost)
    assert pipeline.host.memory is bridge.MEMORY and pipeline.model is None and pipeline.detector is None
    assert type(pipeline) is sys.modules[f"{pack.__name__}.face_pipeline.pipeline"].Pipeline  # no subclass, no hooks


def test_the_all_in_one_preset_is_its_last_input_and_checked_early(pack):
    """GPEN Face Restore's ``preset`` (issue 26): the last optional input, "none" by default (saved workflows keep
    their pixels); "official" needs the parsing weights, which are checked before the prompt runs."""
    node = pack.NODE_CLASS_MAPPINGS["GPENFaceRestore"]
    kind, options = node.INPUT_TYPES()["optional"]["preset"]
    assert kind == ["none", "official", "official_rect"] and options["default"] == "none"
    problem = node.VALIDATE_INPUTS(preset="official")
    assert isinstance(problem, str) and "mask_type parsing_official" in problem and "parsing_parsenet.pth" in problem
    assert node.VALIDATE_INPUTS(preset="official_rect") is True and node.VALIDATE_INPUTS(preset="none") is True
