"""Hostile weight files, built small and fast in a temporary folder (issue 22): what a models folder can hold to make
a reader allocate gigabytes or compute for hours. Used by tests/test_hostile_weights.py and
benchmarks/bench_hostile_weights.py; nothing here is ever loaded by the pack itself.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np

GiB = 1 << 30


def bytearray_pth(path: Path, size: int = 5 * GiB) -> Path:
    """A ~40-byte legacy-format .pth whose first pickle is ``bytearray(size)``: allowed by ``weights_only``."""
    payload = (b"\x80\x02cbuiltins\nbytearray\n" + b"\x8a" + bytes([8]) + struct.pack("<q", size)
               + b"\x85R.")  # GLOBAL builtins.bytearray, LONG1 size, TUPLE1, REDUCE, STOP
    path.write_bytes(payload)
    return path


class _Storage:
    """Pickled as torch.save pickles a storage: a persistent id ('storage', type, key, location, numel)."""

    def __init__(self, numel: int) -> None:
        self.numel = numel


class _Tensor:
    def __init__(self, numel: int) -> None:
        self.numel = numel

    def __reduce__(self):
        import torch

        return torch._utils._rebuild_tensor_v2, (_Storage(self.numel), 0, (self.numel,), (1,), False,
                                                 collections.OrderedDict())


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        import torch

        if isinstance(obj, _Storage):
            return "storage", torch.FloatStorage, "0", "cpu", obj.numel
        return None


def state_dict_pickle(numel: int) -> bytes:
    """``data.pkl`` of a state dict {"weight": float32 tensor of ``numel`` elements in storage "0"} (protocol 2)."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump({"weight": _Tensor(numel)})
    return buffer.getvalue()


def _zip(entries: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip (zip64 records throughout) of (name, stored bytes, method, crc, uncompressed size)."""
    out, central = io.BytesIO(), []
    for name, data, method, crc, size in entries:
        offset = out.tell()
        extra = struct.pack("<HHQQ", 1, 16, size, len(data))
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, method, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                              len(name), len(extra)) + name.encode() + extra)
        out.write(data)
        central.append((name, method, crc, size, len(data), offset))
    start = out.tell()
    for name, method, crc, size, stored, offset in central:
        extra = struct.pack("<HHQQQ", 1, 24, size, stored, offset)
        out.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, method, 0, 0, crc, 0xFFFFFFFF,
                              0xFFFFFFFF, len(name), len(extra), 0, 0, 0, 0, 0xFFFFFFFF) + name.encode() + extra)
    end = out.tell()
    count = len(central)
    out.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, end - start, start))
    out.write(struct.pack("<IIQI", 0x07064B50, 0, end, 1))
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
    return out.getvalue()


def _stored(name: str, data: bytes) -> tuple[str, bytes, int, int, int]:
    return name, data, 0, zlib.crc32(data), len(data)


def zip_bomb_pth(path: Path, size: int = 9 * GiB // 2) -> Path:
    """A PyTorch zip checkpoint of a few MB whose one tensor record inflates to ``size`` bytes of zeros (deflated:
    one compressed MiB block, repeated; the CRC is the real one), its data.pkl declaring the matching tensor."""
    chunk = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)  # the same bytes for every MiB
    count = size >> 20
    body = block * count + compressor.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(chunk, crc)
    path.write_bytes(_zip([
        _stored("archive/data.pkl", state_dict_pickle(size // 4)),
        _stored("archive/byteorder", b"little"),
        ("archive/data/0", body, 8, crc, count << 20),
        _stored("archive/version", b"3\n"),
    ]))
    return path


def _onnx():
    import onnx

    return onnx


def many_encoder_blocks_onnx(path: Path, blocks: int = 100_000) -> Path:
    """A GPEN-looking input, one modulated (computed-weight) transposed convolution, and ``blocks`` fake encoder
    layers (a 4x4 blur, then a stride-2 3x3 convolution with a fused bias, one channel, initializers shared): a few MB
    that the structure match walks layer by layer."""
    _onnx()
    from onnx import TensorProto, helper, numpy_helper

    k = np.array([1, 3, 3, 1], dtype=np.float32)
    blur = (np.outer(k, k) / np.outer(k, k).sum()).reshape(1, 1, 4, 4).astype(np.float32)
    inits = [numpy_helper.from_array(np.ones((1, 3, 1, 1), np.float32), "w0"),
             numpy_helper.from_array(blur, "blur"),
             numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w"),
             numpy_helper.from_array(np.zeros(1, np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w0", "b"], ["e0"]),
             helper.make_node("ConvTranspose", ["e0", "x"], ["t"], strides=[2, 2])]
    for i in range(1, blocks + 1):
        nodes.append(helper.make_node("Conv", [f"e{i - 1}", "blur"], [f"u{i}"], group=1))
        nodes.append(helper.make_node("Conv", [f"u{i}", "w", "b"], [f"e{i}"], strides=[2, 2]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 256, 256])],
                              [helper.make_tensor_value_info(f"e{blocks}", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    path.write_bytes(model.SerializeToString())
    return path


def folding_bomb_onnx(path: Path, side: int = 4096, copies: int = 60, rows: int = 1 << 20) -> Path:
    """About 300 bytes: ConstantOfShape([side, side]) (float32 zeros), a Concat of ``copies`` of it, and a Gather of
    ``rows`` of its rows: folded without a budget, ``(copies + rows / side) * side * side`` elements (defaults: 60
    x 16.8 M and 4.3 G elements, tens of GB)."""
    _onnx()
    from onnx import TensorProto, helper, numpy_helper

    zero = numpy_helper.from_array(np.zeros(1, np.int64), "zero")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["c"]),
             helper.make_node("Concat", ["c"] * copies, ["big"], axis=0),
             helper.make_node("ConstantOfShape", ["count"], ["rows"], value=zero),
             helper.make_node("Gather", ["c", "rows"], ["gathered"], axis=0),
             helper.make_node("Add", ["x", "big"], ["y"]),
             helper.make_node("Add", ["x", "gathered"], ["z"])]
    inits = [numpy_helper.from_array(np.array([side, side], np.int64), "shape"),
             numpy_helper.from_array(np.array([rows], np.int64), "count")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    path.write_bytes(model.SerializeToString())
    return path
