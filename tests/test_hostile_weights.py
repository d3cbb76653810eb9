"""Hostile and broken weight files (issue 22): refused before anything is allocated, within stated time and memory
bounds (gpen_arch/formats/budgets.py), with a message naming the file; the model list survives any file in the
folders."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import random
import shutil
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import hostile_files
import pytest
import torch
from conftest import REPO_ROOT, data_file, import_pack
from safetensors.torch import load_file, save_file

from gpen_arch import CheckpointReadError, GPENError, NotAGPENCheckpoint, load_gpen, read_state_dict
from gpen_arch.formats.budgets import MAX_RECORD_BYTES

DOUBLE = Path(__file__).resolve().parent / "comfy_double"
COMPACT_256 = ("gpen", "compact", "compact_256_cm1_n0.0625_s64.safetensors")
#: Peak memory a refusal may add to the process (measured in a fresh subprocess, ru_maxrss after the imports as the
#: baseline): the bombs ask for 4.5-5 GiB (pickle, zip) or tens of GB (ONNX folding); refused, they cost
#: 0-150 MiB (the ONNX parse of a 9 MB graph is the largest part).
PEAK_BOUND_MIB = 256
#: Wall time for a refusal (the 100,000-block ONNX took hours before; measured about 2 s here with the parse).
TIME_BOUND_S = 10.0

_MEASURE = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from gpen_arch import read_state_dict
import onnx  # imported before the baseline: read_state_dict imports it lazily for .onnx files
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    read_state_dict({path!r})
    error = None
except Exception as exc:
    error = [type(exc).__name__, str(exc)]
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"error": error, "seconds": seconds, "extra_mib": (peak - baseline) / 1024}}))
"""


def measure_read(path: Path) -> dict:
    """``read_state_dict(path)`` in a fresh Python: the exception, the seconds and the peak memory it added (MiB)."""
    pytest.importorskip("onnx")
    result = subprocess.run([sys.executable, "-c", _MEASURE.format(root=str(REPO_ROOT), path=str(path))],
                            check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ the bombs
def test_bytearray_pickle_is_refused_before_allocating(tmp_path):
    path = hostile_files.bytearray_pth(tmp_path / "bytearray.pth")  # 35 bytes asking for bytearray(5 GiB)
    assert path.stat().st_size < 64
    found = measure_read(path)
    assert found["error"][0] == "CheckpointReadError"
    assert found["error"][1].startswith("bytearray.pth (35 bytes) was refused before loading: its pickle asks for a "
                                        "5,120.0 MiB Python bytearray")
    assert found["extra_mib"] < PEAK_BOUND_MIB and found["seconds"] < TIME_BOUND_S, found


def test_zip_bomb_is_refused_without_inflating(tmp_path):
    path = hostile_files.zip_bomb_pth(tmp_path / "zip_bomb.pth")  # 4.6 MB, one record inflating to 4.5 GiB
    assert path.stat().st_size < 8 << 20
    assert zipfile.ZipFile(path).getinfo("archive/data/0").file_size == 9 << 29
    found = measure_read(path)
    assert found["error"][0] == "CheckpointReadError"
    assert "zip_bomb.pth" in found["error"][1]
    assert "its zip record 'archive/data/0' declares 4,608.0 MiB (4.6 MiB stored; limit 128.0 MiB" in found["error"][1]
    assert found["extra_mib"] < PEAK_BOUND_MIB and found["seconds"] < TIME_BOUND_S, found


def test_onnx_with_100000_encoder_blocks_is_refused_quickly(tmp_path):
    pytest.importorskip("onnx")
    from gpen_arch.formats.onnx_import import onnx_not_gpen_reason

    path = hostile_files.many_encoder_blocks_onnx(tmp_path / "GPEN-BFR-512.onnx")  # about 9 MB
    start = time.perf_counter()
    with pytest.raises(NotAGPENCheckpoint, match=r"the graph of GPEN-BFR-512.onnx has over 80,000 records"):
        read_state_dict(path)
    assert time.perf_counter() - start < TIME_BOUND_S
    assert "over 80,000 records" in onnx_not_gpen_reason(path)  # and the model list leaves it out


def test_encoder_deeper_than_gpen_2048_is_refused(tmp_path):
    pytest.importorskip("onnx")
    path = hostile_files.many_encoder_blocks_onnx(tmp_path / "deep.onnx", blocks=12)
    with pytest.raises(NotAGPENCheckpoint, match="the encoder has more than 10 layers"):
        read_state_dict(path)


def test_structure_match_is_linear_in_the_graph(tmp_path, monkeypatch):
    """Just under the node budget (20,000 nodes), the whole read and match stays fast: before, each step of the walk
    scanned every anchor (quadratic: 10,000 blocks took minutes)."""
    pytest.importorskip("onnx")
    from gpen_arch.formats import budgets, onnx_import

    path = hostile_files.many_encoder_blocks_onnx(tmp_path / "wide.onnx", blocks=(budgets.MAX_ONNX_NODES - 2) // 2)
    start = time.perf_counter()
    with pytest.raises(NotAGPENCheckpoint, match="more than 10 layers"):
        read_state_dict(path)
    first = time.perf_counter() - start
    monkeypatch.setattr(onnx_import, "MAX_ENCODER_LAYERS", 10**6)  # the walk goes through all 9,999 layers
    start = time.perf_counter()
    with pytest.raises(NotAGPENCheckpoint):
        read_state_dict(path)
    walk = time.perf_counter() - start
    assert first < TIME_BOUND_S and walk < 3 * TIME_BOUND_S, (first, walk)


def test_constant_folding_bomb_is_refused_quickly(tmp_path):
    path = hostile_files.folding_bomb_onnx(tmp_path / "fold_bomb.onnx")  # folded naively: tens of GB
    assert path.stat().st_size < 1024
    found = measure_read(path)
    assert found["error"][0] == "NotAGPENCheckpoint" and "fold_bomb.onnx" in found["error"][1]
    assert found["extra_mib"] < PEAK_BOUND_MIB and found["seconds"] < TIME_BOUND_S, found


def test_constant_folding_has_a_total_budget(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    monkeypatch.setattr("gpen_arch.formats.onnx_graph.MAX_FOLD_TOTAL_ELEMENTS", 1_000_000)
    path = hostile_files.folding_bomb_onnx(tmp_path / "fold.onnx", side=512, copies=3, rows=8)  # 4 x 262,144
    with pytest.raises(NotAGPENCheckpoint, match=r"folding the constants of fold.onnx would create more than "
                                                 r"1,000,000 elements"):
        read_state_dict(path)


# ------------------------------------------------------------------------------- other declared-size bombs
def legacy_pth(path: Path, numel: int) -> Path:
    """PyTorch's legacy (non-zip) format: magic number, protocol, system info, the state dict, the storage keys."""
    parts = [pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2), pickle.dumps(1001, protocol=2),
             pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2),
             hostile_files.state_dict_pickle(numel), pickle.dumps(["0"], protocol=2)]
    path.write_bytes(b"".join(parts) + struct.pack("<q", numel) + bytes(4 * min(numel, 16)))
    return path


def test_legacy_storage_larger_than_the_budget_is_refused(tmp_path):
    path = legacy_pth(tmp_path / "legacy.pth", numel=5 << 30)
    with pytest.raises(CheckpointReadError, match=r"legacy.pth \(\d+ bytes\) was refused before loading: a tensor "
                                                  r"storage declares 20,480.0 MiB"):
        read_state_dict(path)
    small = legacy_pth(tmp_path / "legacy_small.pth", numel=1 << 20)  # within budget, but not in the file
    with pytest.raises(CheckpointReadError, match=r"legacy_small.pth .* is truncated or damaged: its storages declare "
                                                  r"4,194,304 bytes, more than the file's"):
        read_state_dict(small)


def test_a_real_legacy_file_still_loads(tmp_path):
    compact = load_file(str(data_file(*COMPACT_256)))
    path = tmp_path / "old.pth"
    torch.save(compact, path, _use_new_zipfile_serialization=False)
    model = load_gpen(read_state_dict(path))
    assert model.config.size == 256


def test_safetensors_headers_are_checked_before_reading(tmp_path):
    huge = tmp_path / "huge_header.safetensors"
    huge.write_bytes(struct.pack("<Q", 1 << 40) + b"{}" + bytes(16))
    with pytest.raises(CheckpointReadError, match="huge_header.safetensors"):
        read_state_dict(huge)
    header = json.dumps({"w": {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 16]}}).encode()
    shape = tmp_path / "huge_shape.safetensors"
    shape.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    with pytest.raises(CheckpointReadError, match=r"huge_shape.safetensors .*declares 1,099,511,627,776 elements"):
        read_state_dict(shape)


def test_tensor_shape_over_budget_in_a_pickle(tmp_path):
    data = hostile_files.state_dict_pickle(MAX_RECORD_BYTES)  # a storage of 512 MiB float32
    path = tmp_path / "big_storage.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data)
        archive.writestr("archive/data/0", b"")
    with pytest.raises(CheckpointReadError, match=r"big_storage.pth .*a tensor storage declares 512.0 MiB"):
        read_state_dict(path)


@pytest.mark.parametrize("kind", ["sparse", "meta", "quantized"])
def test_tensors_gpen_never_holds_are_refused_by_name(tmp_path, kind):
    value = {"sparse": lambda: torch.zeros(4, 4).to_sparse(), "meta": lambda: torch.empty(4, device="meta"),
             "quantized": lambda: torch.quantize_per_tensor(torch.zeros(4), 0.1, 0, torch.qint8)}[kind]()
    path = tmp_path / f"{kind}.pth"
    torch.save({"w": value}, path)
    with pytest.raises(CheckpointReadError, match=rf"{kind}.pth .*it holds a {kind}"):
        read_state_dict(path)
    with pytest.raises(CheckpointReadError, match=f"the weight w is a {kind}"):
        load_gpen({"w": value})


# ------------------------------------------------------------------------------------ raw errors, mapped
RAW_ERRORS = [AssertionError("assert key in deserialized_objects"), RuntimeError("PytorchStreamReader failed"),
              EOFError("Ran out of input"), zipfile.BadZipFile("Bad magic number"), ValueError("embedded null byte"),
              UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), KeyError("storages"),
              struct.error("unpack requires a buffer"), pickle.UnpicklingError("invalid load key"),
              NotImplementedError("sparse"), IndexError("tuple index out of range"), TypeError("bad argument"),
              RecursionError("maximum recursion depth exceeded"), OverflowError("int too large")]


@pytest.mark.parametrize("error", RAW_ERRORS, ids=lambda e: type(e).__name__)
def test_every_raw_error_of_torch_load_names_the_file(tmp_path, monkeypatch, error):
    path = tmp_path / "broken.pth"
    torch.save({"w": torch.zeros(2)}, path)

    def raise_it(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "load", raise_it)
    with pytest.raises(CheckpointReadError, match=r"^broken.pth ") as info:
        read_state_dict(path)
    assert "out of memory" not in str(info.value) and "weights_only" not in str(info.value)


def test_memory_error_while_loading_is_not_a_batch_size_problem(tmp_path, monkeypatch):
    path = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(2)}, path)

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(torch, "load", no_memory)
    with pytest.raises(CheckpointReadError, match=r"model.pth \([\d,]+ bytes\) could not be read: out of memory while "
                                                  r"loading it") as info:
        read_state_dict(path)
    assert "batch" not in str(info.value)


@pytest.mark.parametrize("content", [b"\x00", b"\x80", b"\x80\x02", b"PK\x03\x04", b"\x80\x02}q\x00(X",
                                     b"\x80\x02c__builtin__\nset\nq\x00]q\x01\x85q\x02Rq\x03."],
                         ids=["one_byte", "pickle_start", "proto_only", "zip_start", "cut_dict", "set"])
def test_tiny_and_cut_files_name_the_file(tmp_path, content):
    path = tmp_path / "tiny.pth"
    path.write_bytes(content)
    with pytest.raises(GPENError, match=r"^tiny.pth"):
        load_gpen(read_state_dict(path))


def test_names_with_a_nul_byte_and_garbage_onnx(tmp_path):
    with pytest.raises(CheckpointReadError, match="cannot contain a NUL byte"):
        read_state_dict(str(tmp_path / "a\0b.pth"))
    pytest.importorskip("onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x0a\xff\xff\xff\xff\x0f" + bytes(range(256)))
    with pytest.raises(CheckpointReadError, match=r"^garbage.onnx \(\d+ bytes\) is not a readable ONNX file"):
        read_state_dict(garbage)


def test_the_cli_reports_a_hostile_file_as_such(tmp_path, capsys):
    import cli

    model = hostile_files.bytearray_pth(tmp_path / "tiny.pth", size=10**15)
    image = tmp_path / "in" / "face.jpg"
    image.parent.mkdir()
    shutil.copy(data_file("faces", "grace_hopper.jpg"), image)
    status = cli.main([str(image), "--model", str(model), "--output", str(tmp_path / "out"), "--detector",
                       "yunet_opencv", "--no-download"])
    err = capsys.readouterr().err
    assert status == 1
    assert "tiny.pth" in err and "bytearray" in err
    assert "out of memory" not in err and "batch-size" not in err and "unexpected" not in err


# ------------------------------------------------------------------------------------------- the model list
@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    """The pack over a models folder that holds two GPEN files among every kind of odd file."""
    models = tmp_path_factory.mktemp("models")
    gpen, other = models / "gpen", models / "facerestore_models"
    gpen.mkdir()
    other.mkdir()
    compact = load_file(str(data_file(*COMPACT_256)))
    torch.save(compact, gpen / "good.pth")
    save_file(compact, str(other / "good.safetensors"))
    (other / "notes.txt").write_text("not a model")
    (gpen / "one_byte.pth").write_bytes(b"\x80")
    (gpen / "empty.pt").write_bytes(b"")
    os.symlink(other / "notes.txt", gpen / "text_link.pth")
    os.symlink(gpen / "missing.pth", gpen / "broken_link.pth")
    (gpen / "directory.pth").mkdir()
    os.mkfifo(gpen / "fifo.pth")
    (gpen / "unreadable.pth").write_bytes(b"\x80\x02}q\x00.")
    hostile_files.bytearray_pth(gpen / "bytearray.pth")
    hostile_files.zip_bomb_pth(other / "zip_bomb.pth", size=1 << 30)
    legacy_pth(other / "legacy_bomb.bin", numel=5 << 30)
    rng = random.Random(22)
    for i in range(60):  # random bytes, some starting like a pickle or a zip
        start = rng.choice([b"", b"\x80\x02", b"\x80\x04", b"PK\x03\x04", b"\x10\x00\x00\x00\x00\x00\x00\x00{"])
        (other / f"random_{i}.bin").write_bytes(start + rng.randbytes(rng.randint(1, 300)))
    if importlib_util_find("onnx"):
        hostile_files.many_encoder_blocks_onnx(other / "GPEN-BFR-1024.onnx", blocks=20_000)
        hostile_files.folding_bomb_onnx(other / "fold.onnx")
    sys.path.insert(0, str(DOUBLE))
    for name in [n for n in sys.modules if n == "folder_paths" or n == "comfy" or n.startswith("comfy.")]:
        del sys.modules[name]
    import folder_paths

    folder_paths.models_dir = str(models)
    module = import_pack("comfyui-gpen-hostile")
    yield module, models
    sys.path.remove(str(DOUBLE))


def importlib_util_find(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _walk_like_comfyui(folder_paths):
    """ComfyUI's own listing: every non-directory entry os.walk gives (FIFOs and broken symlinks included), and a
    full path only for a regular file (``os.path.isfile``)."""

    def get_filename_list(folder_name):
        names = []
        for folder in folder_paths.folder_names_and_paths[folder_name][0]:
            for _root, _dirs, files in os.walk(folder, followlinks=True):
                names.extend(files)
        return sorted(names)

    return get_filename_list


def test_the_list_holds_the_gpen_files_only_and_never_raises(pack, monkeypatch):
    import folder_paths

    module, models = pack
    unreadable = str(models / "gpen" / "unreadable.pth")
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):  # tests run as root: chmod 000 would not stop us, so refuse here
        if str(file) == unreadable:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    loader = module.NODE_CLASS_MAPPINGS["GPENLoadModel"]
    start = time.perf_counter()
    offered = loader.INPUT_TYPES()["required"]["model_name"][0]
    assert offered == ["good.pth", "good.safetensors"]
    monkeypatch.setattr(folder_paths, "get_filename_list", _walk_like_comfyui(folder_paths))
    module.nodes.comfy_bridge._NOT_GPEN.clear()
    assert loader.INPUT_TYPES()["required"]["model_name"][0] == ["good.pth", "good.safetensors"]
    assert time.perf_counter() - start < 6 * TIME_BOUND_S


def test_the_list_never_opens_a_fifo(pack):
    module, models = pack
    result = []
    worker = threading.Thread(target=lambda: result.append(
        module.nodes.comfy_bridge.not_gpen_reason(str(models / "gpen" / "fifo.pth"))), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "reading a FIFO blocked"
    assert "not a regular file" in result[0]


def test_the_list_looks_into_no_tensor_data(pack, monkeypatch):
    """A zip checkpoint is unpickled onto the meta device for the list: no storage record is read."""
    module, models = pack
    bridge = module.nodes.comfy_bridge
    bridge._NOT_GPEN.clear()
    seen = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: seen.append(k.get("map_location")) or real_load(*a, **k))
    assert bridge.not_gpen_reason(str(models / "gpen" / "good.pth")) is None
    assert seen == ["meta"]


def test_loading_a_hostile_file_in_comfyui_names_it(pack):
    module, _models = pack
    pack_error = module.gpen_arch.GPENError  # the pack's own copy of gpen_arch (imported as ComfyUI imports it)
    loader = module.NODE_CLASS_MAPPINGS["GPENLoadModel"]()
    with pytest.raises(pack_error, match=r"^bytearray.pth \(35 bytes\) was refused before loading"):
        loader.load(model_name="bytearray.pth", precision="fp32")
    with pytest.raises(pack_error, match=r"^one_byte.pth"):
        loader.load(model_name="one_byte.pth", precision="fp32")


def test_the_lists_look_at_an_onnx_file_skips_its_weights():
    """The quick look parses an outline: every node and name, the initializers' names, none of their data."""
    onnx = pytest.importorskip("onnx")
    from gpen_arch.formats.onnx_graph import _outline

    path = data_file("onnx", "compact_512_cm2_n0.0625_s64_dynamo.onnx")
    outline = onnx.ModelProto.FromString(_outline(path))
    full = onnx.load(str(path))
    assert len(_outline(path)) < path.stat().st_size / 10
    assert [n.op_type for n in outline.graph.node] == [n.op_type for n in full.graph.node]
    assert [t.name for t in outline.graph.initializer] == [t.name for t in full.graph.initializer]
    assert not any(t.raw_data or t.float_data for t in outline.graph.initializer)


def test_detector_weights_go_through_the_same_checks(tmp_path):
    from face_pipeline.detection.weights import DetectorWeightsCorrupt, read_detector_state_dict

    path = hostile_files.bytearray_pth(tmp_path / "detection_Resnet50_Final.pth")
    with pytest.raises(DetectorWeightsCorrupt, match=r"detection_Resnet50_Final.pth \(35 bytes\) was refused before "
                                                     r"loading: its pickle asks for a 5,120.0 MiB Python bytearray"):
        read_detector_state_dict(path, what="RetinaFace")


def test_loading_a_fifo_never_opens_it(tmp_path):
    fifo = tmp_path / "model.pth"
    os.mkfifo(fifo)
    errors = []

    def load():
        try:
            read_state_dict(fifo)
        except CheckpointReadError as exc:
            errors.append(str(exc))

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "reading a FIFO blocked"
    assert errors == ["model.pth is not a regular file (a FIFO, socket or device): not a checkpoint"]


def test_legacy_files_are_listed_by_their_shapes_without_reading_storages(tmp_path, monkeypatch):
    """The legacy (non-zip) format: its object pickle read with every tensor on the meta device, so a legacy GPEN is
    offered, a legacy detector file is not (the end-to-end ComfyUI test's "not a GPEN" file is one), and a pickle
    wanting any other global is refused; no storage byte is read and torch.load is never called."""
    from gpen_arch.formats.checkpoint_file import peek_torch_file

    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called for a shape look"))
    compact = load_file(str(data_file(*COMPACT_256)))
    gpen = tmp_path / "old_gpen.pth"
    real_save = torch.serialization.save
    real_save(compact, gpen, _use_new_zipfile_serialization=False)
    shapes = peek_torch_file(gpen)
    assert {k: (tuple(v.shape), v.dtype) for k, v in shapes.items()} == {
        k: (tuple(v.shape), v.dtype) for k, v in compact.items()}
    assert all(v.device.type == "meta" for v in shapes.values())
    detector = peek_torch_file(data_file("detectors", "detection_mobilenet0.25_Final.pth"))
    assert "body.stage1.0.0.weight" in detector and "final_linear.0.weight" not in detector
    evil = tmp_path / "evil.pth"
    parts = [pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2), pickle.dumps(1001, protocol=2),
             pickle.dumps({"protocol_version": 1001}, protocol=2), pickle.dumps(os.getcwd, protocol=2)]
    evil.write_bytes(b"".join(parts))
    with pytest.raises(CheckpointReadError, match="evil.pth"):
        peek_torch_file(evil)
