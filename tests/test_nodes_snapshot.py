"""Every node's INPUT_TYPES() as saved workflows see it, held to a snapshot taken before the option inputs were built
from the records (issue 24): input names and their order (the widget order of a saved workflow), required or
optional, type (combo lists included), default, bounds, step and tooltip. With the ComfyUI test double.

Write the snapshot again (only for a deliberate change of a node's inputs): ``GPEN_WRITE_NODE_SNAPSHOT=1 python -m
pytest -q tests/test_nodes_snapshot.py``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import DATA, import_pack

DOUBLE = Path(__file__).resolve().parent / "comfy_double"
SNAPSHOT = DATA / "node_inputs_6043ddb.json"
#: inputs whose combo list is the files in the user's model folders: recorded as "<files>"
FOLDER_LISTS = {("GPENLoadModel", "model_name")}


@pytest.fixture(scope="module")
def mappings(tmp_path_factory):
    """NODE_CLASS_MAPPINGS of the pack imported as ComfyUI imports it, over an empty models folder."""
    models = tmp_path_factory.mktemp("models")
    sys.path.insert(0, str(DOUBLE))
    for name in [n for n in sys.modules if n in ("folder_paths", "server") or n.split(".")[0] in ("comfy",
                                                                                                  "comfy_execution")]:
        del sys.modules[name]
    import folder_paths

    folder_paths.models_dir = str(models)
    yield import_pack("comfyui-gpen-inputs-snapshot").NODE_CLASS_MAPPINGS
    sys.path.remove(str(DOUBLE))


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
            assert [row[0] for row in now[node_id][part]] == [row[0] for row in before[node_id][part]], \
                f"{node_id} {part}: input names or their order changed"
            for row_now, row_before in zip(now[node_id][part], before[node_id][part]):
                # as JSON text: a default of 0 where it was 0.0 (INT for FLOAT) counts as a change
                assert json.dumps(row_now) == json.dumps(row_before), f"{node_id}.{row_now[0]} changed"


def test_the_snapshot_knows_every_widget():
    """The snapshot is not empty or partial: it holds the paste widgets with their bounds and tooltips."""
    before = json.loads(SNAPSHOT.read_text())
    paste = dict((name, (kind, extra)) for name, kind, extra in before["GPENPasteFaces"]["required"])
    assert paste["max_output_size"] == ("INT", {"default": 8192, "min": 512, "max": 16384, "step": 64,
                                                "tooltip": "With output_scale auto: the output's longest side "
                                                           "stays within this."})
    assert paste["output_scale"][0] == ["1", "2", "4", "auto"]
    assert len(before) == 6 and all(before[n]["required"] for n in before)
