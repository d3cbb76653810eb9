"""An ONNX file read as data: its tensors, its nodes, and the constants a folding pass can compute from them.

Nothing in the file is executed. The graph is parsed with the ``onnx`` package (imported lazily; it is an optional
dependency: ``pip install onnx``); external tensor data is read only from files inside the model's own folder;
constant sub-graphs (the weights an exporter multiplied by their equalized-learning-rate scales, reshaped or
transposed) are computed with numpy for a short whitelist of pure tensor operations, and everything else stays a
symbolic "dynamic" value. Input-dependent operations are never run. The sizes come from ``budgets.py``: the file
(``MAX_ONNX_BYTES``), the graph (``MAX_ONNX_NODES``, ``MAX_ONNX_INITIALIZERS``, ``MAX_ONNX_NODE_INPUTS``: checked right
after parsing, before any tensor is converted) and folding (each result's size is computed from its inputs' shapes
before it is evaluated: ``MAX_FOLD_ELEMENTS`` per result, ``MAX_FOLD_TOTAL_ELEMENTS`` over the graph).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointReadError, NotAGPENCheckpoint
from .budgets import (
    MAX_FOLD_ELEMENTS,
    MAX_FOLD_TOTAL_ELEMENTS,
    MAX_ONNX_BYTES,
    MAX_ONNX_INITIALIZERS,
    MAX_ONNX_NODE_INPUTS,
    MAX_ONNX_NODES,
    MAX_ONNX_OUTLINE_BYTES,
)

logger = logging.getLogger(__name__)



@dataclass
class Node:
    """One graph node: ``op`` (``domain::op_type`` outside the default domain), its inputs/outputs, attributes."""

    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)


@dataclass
class OnnxGraph:
    """The parsed graph. ``constants`` maps tensor names to numpy arrays (initializers, Constant nodes and whatever
    could be folded from them); ``nodes`` are the remaining (input-dependent) nodes in file order; ``sources`` gives
    for a folded constant the initializer it was derived from (a hint only: exporters rename freely)."""

    path: Path
    inputs: list[tuple[str, list[int | str]]]
    outputs: list[tuple[str, list[int | str]]]
    nodes: list[Node]
    constants: dict[str, np.ndarray]
    sources: dict[str, str]
    initializer_names: list[str]
    opset: int
    producer: str


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise CheckpointReadError(
            "reading .onnx GPEN files needs the 'onnx' package, which is not installed: run `pip install onnx` in "
            "ComfyUI's Python environment (or convert the file once elsewhere with `python cli.py convert`)"
        ) from exc
    return onnx


def read_onnx_graph(path: str | os.PathLike, *, weights: bool = True) -> OnnxGraph:
    """Parse ``path`` safely and fold its constants. Raises ``CheckpointReadError`` for a file that is too big,
    truncated or corrupt, or whose external data is missing or lies outside the model's folder.

    ``weights=False`` is a quick look: no tensor is converted or folded (``constants`` stays empty, every node is
    kept), enough to see the graph's inputs, operators and names; the initializers' data is not even read
    (``_outline``)."""
    onnx = _import_onnx()
    from google.protobuf.message import DecodeError

    path = Path(path)
    size = path.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise CheckpointReadError(
            f"{path.name} is {size / 1024**3:.1f} GiB; a GPEN ONNX file is at most about 0.3 GB "
            f"(limit {MAX_ONNX_BYTES / 1024**3:.0f} GiB): this is not a GPEN model"
        )
    model = onnx.ModelProto()
    try:
        outline = _outline(path)  # the graph's size is checked before the whole file is parsed
        model.ParseFromString(path.read_bytes() if weights else outline)
    except (DecodeError, ValueError, RuntimeError, IndexError) as exc:
        raise CheckpointReadError(
            f"{path.name} ({size:,} bytes) is not a readable ONNX file: it is truncated or corrupt (re-download "
            f"it). Detail: {str(exc).strip()[:200] or type(exc).__name__}"
        ) from exc
    graph = model.graph
    if not graph.node or not model.opset_import:
        raise CheckpointReadError(
            f"{path.name} ({size:,} bytes) holds no complete ONNX graph (no nodes or no opset): the file is "
            "truncated, corrupt or not an ONNX model"
        )
    _check_graph_size(graph, path.name)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    folder = path.resolve().parent
    budget = [MAX_ONNX_BYTES - size]
    constants: dict[str, np.ndarray] = {}
    for tensor in graph.initializer if weights else ():
        constants[tensor.name] = _tensor_to_array(onnx, tensor, folder, path.name, budget)
    sources = {name: name for name in constants}
    initializer_names = [t.name for t in graph.initializer]
    nodes: list[Node] = []
    for proto in graph.node:
        attrs = {}
        for attribute in proto.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR and not weights:
                attrs[attribute.name] = None
            elif attribute.type == onnx.AttributeProto.TENSOR:
                attrs[attribute.name] = _tensor_to_array(onnx, attribute.t, folder, path.name, budget)
            elif attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                attrs[attribute.name] = None  # sub-graphs (If/Loop) are never evaluated
            else:
                attrs[attribute.name] = onnx.helper.get_attribute_value(attribute)
        op = proto.op_type if proto.domain in ("", "ai.onnx") else f"{proto.domain}::{proto.op_type}"
        nodes.append(Node(op=op, name=proto.name, inputs=list(proto.input), outputs=list(proto.output), attrs=attrs))
    initializers = set(initializer_names)
    inputs = [(v.name, _dims(v)) for v in graph.input if v.name not in initializers]
    outputs = [(v.name, _dims(v)) for v in graph.output]
    dynamic = _fold(nodes, constants, sources, path.name) if weights else nodes
    return OnnxGraph(path=path, inputs=inputs, outputs=outputs, nodes=dynamic, constants=constants, sources=sources,
                     initializer_names=initializer_names, opset=opset,
                     producer=f"{model.producer_name} {model.producer_version}".strip())


# ------------------------------------------------------------------------------------------- the quick look's outline
_MAX_GRAPH_RECORDS = 4 * MAX_ONNX_NODES  # nodes, initializers, inputs, outputs and value infos of one graph


def _varint(data, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise ValueError("a varint longer than 10 bytes")


def _fields(data, start: int, end: int):
    """(field number, first byte of the record, first byte of the payload, end of the record) of a protobuf message
    in ``data[start:end]``, without copying anything."""
    at = start
    while at < end:
        tag, payload = _varint(data, at)
        kind = tag & 7
        if kind == 0:
            _, stop = _varint(data, payload)
        elif kind == 1:
            stop = payload + 8
        elif kind == 5:
            stop = payload + 4
        elif kind == 2:
            length, payload = _varint(data, payload)
            stop = payload + length
        else:
            raise ValueError(f"protobuf wire type {kind} (groups are not used by ONNX)")
        if stop > end:
            raise ValueError("a record runs past the end of its message (the file is truncated)")
        yield tag >> 3, at, payload, stop
        at = stop


def _length_delimited(field: int, payload: bytes) -> bytes:
    tag, length, out = (field << 3) | 2, len(payload), bytearray()
    for value in (tag, length):
        while value > 0x7F:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out) + payload


def _outline(path: Path) -> bytes:
    """The ModelProto of ``path`` without its weights: every record copied but the graph's initializers, of which
    only the names are kept. Read through a memory map, so the weights' pages are never read; at most
    ``MAX_ONNX_OUTLINE_BYTES`` come out (a GPEN export's outline is well under 1 MB)."""
    import mmap

    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        out: list[bytes] = []
        total = 0
        for field, record, payload, stop in _fields(data, 0, len(data)):
            if field != 7:  # not the graph: ir_version, opset_import, producer, ...
                out.append(data[record:stop] if stop - record <= MAX_ONNX_OUTLINE_BYTES else b"")
                total += stop - record
            else:
                graph: list[bytes] = []
                for count, (inner, inner_record, inner_payload, inner_stop) in enumerate(
                        _fields(data, payload, stop)):
                    if count > _MAX_GRAPH_RECORDS:
                        raise NotAGPENCheckpoint(
                            f"not a GPEN network: the graph of {path.name} has over {_MAX_GRAPH_RECORDS:,} records "
                            f"(nodes, initializers, inputs, value infos; a GPEN-2048 export has under 4,000)")
                    if inner in (5, 15):  # an initializer (sparse: 15): its name (TensorProto field 8) only
                        name = next((data[p:e] for f, _r, p, e in itertools.islice(
                            _fields(data, inner_payload, inner_stop), 64) if f == 8), b"")
                        graph.append(_length_delimited(inner, _length_delimited(8, name)))
                    else:
                        graph.append(data[inner_record:inner_stop] if inner_stop - inner_record
                                     <= MAX_ONNX_OUTLINE_BYTES else b"")
                    total += len(graph[-1]) or inner_stop - inner_record
                    if total > MAX_ONNX_OUTLINE_BYTES:
                        break
                out.append(_length_delimited(7, b"".join(graph)))
            if total > MAX_ONNX_OUTLINE_BYTES:
                raise NotAGPENCheckpoint(
                    f"not a GPEN network: the graph of {path.name}, without its weights, is over "
                    f"{MAX_ONNX_OUTLINE_BYTES / 1024**2:.0f} MiB (a GPEN export's is under 1 MiB)")
    return b"".join(out)


def _check_graph_size(graph, file_name: str) -> None:
    """Refuse a graph far beyond GPEN's (``budgets.py``) before anything in it is converted or matched."""
    counts = (("nodes", lambda: len(graph.node), MAX_ONNX_NODES),
              ("initializers", lambda: len(graph.initializer), MAX_ONNX_INITIALIZERS),
              ("inputs to one node", lambda: max((len(node.input) for node in graph.node), default=0),
               MAX_ONNX_NODE_INPUTS))
    for what, counter, limit in counts:  # the node count first: the widest node is looked for in a bounded graph
        count = counter()
        if count > limit:
            raise NotAGPENCheckpoint(
                f"not a GPEN network: {file_name} has {count:,} {what} (limit {limit:,}; a GPEN-2048 export has about "
                f"3,400 nodes, 300 initializers and at most 6 inputs to a node)")


def _dims(value_info) -> list[int | str]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


# ------------------------------------------------------------------------------------------------- tensor data
def _tensor_to_array(onnx, tensor, folder: Path, file_name: str, budget: list[int]) -> np.ndarray:
    from onnx import numpy_helper

    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        info = {entry.key: entry.value for entry in tensor.external_data}
        tensor_copy = onnx.TensorProto()
        tensor_copy.CopyFrom(tensor)
        del tensor_copy.external_data[:]
        tensor_copy.data_location = onnx.TensorProto.DEFAULT
        tensor_copy.raw_data = _read_external(info, tensor.name, folder, file_name, budget)
        tensor = tensor_copy
    try:
        array = numpy_helper.to_array(tensor)
    except (ValueError, TypeError) as exc:
        raise CheckpointReadError(
            f"{file_name}: tensor {tensor.name!r} is corrupt (its data does not fit its shape "
            f"{list(tensor.dims)}): {str(exc)[:200]}"
        ) from exc
    if array.dtype.kind == "V" or array.dtype.name == "bfloat16":  # bfloat16/float8 as ml_dtypes
        array = array.astype(np.float32)
    return array


def _read_external(info: dict, name: str, folder: Path, file_name: str, budget: list[int]) -> bytes:
    """The bytes of an external tensor, read only from a regular file inside the model's own folder."""
    location = info.get("location", "")
    if not location or os.path.isabs(location) or location.startswith(("\\", "/")) or ":" in location:
        raise CheckpointReadError(
            f"{file_name}: tensor {name!r} names its data at {location!r}; only files beside the model (a relative "
            "path inside its folder) are read. Refused: this file may be trying to read other files on your disk"
        )
    target = (folder / location).resolve()
    if target.parent != folder and folder not in target.parents:
        raise CheckpointReadError(
            f"{file_name}: tensor {name!r} names its data at {location!r}, outside the model's folder {folder}. "
            "Refused: this file may be trying to read other files on your disk"
        )
    if not target.is_file():
        raise CheckpointReadError(
            f"{file_name}: tensor {name!r} keeps its data in {location!r}, which is missing from {folder}: copy the "
            "data file(s) that came with the model beside it"
        )
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else target.stat().st_size - offset
    except ValueError as exc:
        raise CheckpointReadError(f"{file_name}: tensor {name!r} has a corrupt external-data entry: {info}") from exc
    if offset < 0 or length < 0 or offset + length > target.stat().st_size:
        raise CheckpointReadError(
            f"{file_name}: tensor {name!r} wants bytes {offset}..{offset + length} of {location!r}, which has "
            f"{target.stat().st_size:,}: the data file is truncated or belongs to another model"
        )
    budget[0] -= length
    if budget[0] < 0:
        raise CheckpointReadError(
            f"{file_name}: its external data exceeds {MAX_ONNX_BYTES / 1024**3:.0f} GiB: this is not a GPEN model"
        )
    with open(target, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)


# --------------------------------------------------------------------------------------------- constant folding
def _attr_or_input(node: Node, values: list, index: int, attr: str):
    if attr in node.attrs:
        return node.attrs[attr]
    if len(values) > index and values[index] is not None:
        return [int(v) for v in np.asarray(values[index]).reshape(-1)]
    return None


def _reshape(x, shape, allowzero=0):
    shape = [int(s) for s in shape]
    if not allowzero:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _slice(node: Node, values: list) -> np.ndarray:
    x = values[0]
    if "starts" in node.attrs:  # opset < 10
        starts, ends = node.attrs["starts"], node.attrs["ends"]
        axes, steps = node.attrs.get("axes", list(range(len(starts)))), [1] * len(starts)
    else:
        starts, ends = [int(v) for v in values[1]], [int(v) for v in values[2]]
        axes = [int(v) for v in values[3]] if len(values) > 3 and values[3] is not None else list(range(len(starts)))
        steps = [int(v) for v in values[4]] if len(values) > 4 and values[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        dim = x.shape[axis]
        start = max(min(start, dim), -dim - 1) if step < 0 else max(min(start, dim), -dim)
        end = max(min(end, dim), -dim - 1)
        if step < 0 and end == -dim - 1:
            end = None
        index[axis] = slice(start, end, step)
    return x[tuple(index)]


def _int_div(a, b):
    if np.issubdtype(a.dtype, np.integer):
        return (np.trunc(a / b)).astype(a.dtype)
    return (a / b).astype(a.dtype)


def _elements_of(shape) -> int:
    return math.prod(int(s) for s in shape)


def _evaluate(node: Node, values: list[Any]) -> list[np.ndarray] | None:
    """The outputs of a pure tensor operation on constant inputs, or None when it is not one we fold.

    ``values``: the node's inputs, arrays or None for an absent optional one, as read from an untrusted file: they
    are used as the operation expects them, and whatever a malformed one raises is caught by ``_fold``."""
    op, a = node.op, node.attrs
    x: Any = values[0] if values else None
    if op == "Constant":
        for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            if key in a:
                value = a[key]
                dtype = np.float32 if "float" in key else np.int64
                return [np.asarray(value) if key == "value" else np.asarray(value, dtype=dtype)]
        return None
    if op == "Identity":
        return [x]
    if op == "Cast":
        from onnx import helper

        return [x.astype(helper.tensor_dtype_to_np_dtype(a["to"]))]
    if op == "Reshape":
        return [_reshape(x, values[1], a.get("allowzero", 0))]
    if op == "Transpose":
        return [np.ascontiguousarray(np.transpose(x, a.get("perm")))]
    if op == "Unsqueeze":
        axes = _attr_or_input(node, values, 1, "axes")
        if axes is None:  # required here: not foldable
            return None
        for axis in sorted(ax % (x.ndim + len(axes)) for ax in axes):
            x = np.expand_dims(x, axis)
        return [x]
    if op == "Squeeze":
        axes = _attr_or_input(node, values, 1, "axes")
        return [np.squeeze(x, axis=tuple(axes) if axes is not None else None)]
    if op == "Flatten":
        axis = a.get("axis", 1) % max(x.ndim, 1)
        return [x.reshape(_elements_of(x.shape[:axis]), -1)]
    if op == "Slice":
        return [np.ascontiguousarray(_slice(node, values))]
    if op == "Concat":
        return [np.concatenate(values, axis=a["axis"])]
    if op == "Gather":
        return [np.take(x, values[1].astype(np.int64), axis=a.get("axis", 0))]
    if op == "Shape":
        return [np.asarray(x.shape, dtype=np.int64)]
    if op in ("Mul", "Add", "Sub", "Div", "Pow"):
        y = values[1]
        if _elements_of(np.broadcast_shapes(x.shape, y.shape)) > MAX_FOLD_ELEMENTS:
            return None
        if op == "Mul":
            return [(x * y).astype(x.dtype)]
        if op == "Add":
            return [(x + y).astype(x.dtype)]
        if op == "Sub":
            return [(x - y).astype(x.dtype)]
        if op == "Div":
            return [_int_div(x, y)]
        return [np.power(x, y).astype(x.dtype)]
    if op == "Sqrt":
        return [np.sqrt(x)]
    if op == "Reciprocal":
        return [(1 / x).astype(x.dtype)]
    if op == "Neg":
        return [-x]
    if op == "ConstantOfShape":
        if _elements_of(x) > MAX_FOLD_ELEMENTS:
            return None
        fill = a.get("value", np.zeros(1, dtype=np.float32)).reshape(-1)
        return [np.full([int(s) for s in x], fill[0], dtype=fill.dtype)]
    if op == "Expand":
        shape = np.broadcast_shapes(x.shape, tuple(int(s) for s in values[1]))
        if _elements_of(shape) > MAX_FOLD_ELEMENTS:
            return None
        return [np.broadcast_to(x, shape).copy()]
    if op == "Tile":
        repeats = [int(r) for r in values[1]]
        if _elements_of(x.shape) * _elements_of(repeats) > MAX_FOLD_ELEMENTS:
            return None
        return [np.tile(x, repeats)]
    return None


def _result_elements(node: Node, values: list[Any]) -> int | None:
    """How many elements folding ``node`` would create, from its inputs' shapes (nothing is computed); None when the
    operation or its operands are not understood (it is then not folded). ``values`` as for ``_evaluate``."""
    op = node.op
    x: Any = values[0] if values else None
    if op == "Constant":
        value = next((node.attrs[k] for k in ("value", "value_float", "value_floats", "value_int", "value_ints")
                      if k in node.attrs), None)
        return int(np.asarray(value).size) if value is not None else None
    if op == "Shape":
        return x.ndim
    if op == "Concat":
        return sum(int(v.size) for v in values if v is not None)
    if op == "Gather":
        rows = x.shape[node.attrs.get("axis", 0) % max(x.ndim, 1)] if x.ndim else 0
        return int(values[1].size) * (x.size // rows if rows else 0)
    if op == "ConstantOfShape":
        shape = [int(s) for s in np.asarray(x).reshape(-1)]
        return None if any(s < 0 for s in shape) else _elements_of(shape)
    if op == "Expand":
        return _elements_of(np.broadcast_shapes(x.shape, tuple(int(s) for s in np.asarray(values[1]).reshape(-1))))
    if op == "Tile":
        return int(x.size) * _elements_of(np.asarray(values[1]).reshape(-1))
    if op in ("Mul", "Add", "Sub", "Div", "Pow"):
        return _elements_of(np.broadcast_shapes(x.shape, values[1].shape))
    return int(x.size) if x is not None else None  # the rest keep or shrink their input's size


def _fold(nodes: list[Node], constants: dict[str, np.ndarray], sources: dict[str, str], file_name: str) -> list[Node]:
    """Fold every node whose inputs are all constants (into ``constants``); return the others in order. A result
    over ``MAX_FOLD_ELEMENTS`` stays dynamic; more than ``MAX_FOLD_TOTAL_ELEMENTS`` created in all refuses the file."""
    dynamic: list[Node] = []
    created = 0
    for node in nodes:
        present = [name for name in node.inputs if name]
        if all(name in constants for name in present):
            values = [constants[name] if name else None for name in node.inputs]
            try:
                count = _result_elements(node, values)
                if count is None or count < 0 or count > MAX_FOLD_ELEMENTS:
                    results = None
                else:
                    created += count
                    if created > MAX_FOLD_TOTAL_ELEMENTS:
                        raise NotAGPENCheckpoint(
                            f"not a GPEN network: folding the constants of {file_name} would create more than "
                            f"{MAX_FOLD_TOTAL_ELEMENTS:,} elements (a GPEN-2048 export needs about 47 million)")
                    results = _evaluate(node, values)
            except (ValueError, TypeError, IndexError, KeyError, OverflowError, AttributeError):
                results = None  # malformed constant arithmetic: leave it to the structure check
            if results is not None and len(results) == len(node.outputs):
                for name, value in zip(node.outputs, results):
                    constants[name] = np.asarray(value)
                    big = [n for n in present if n in sources and constants[n].size == np.asarray(value).size]
                    if big:
                        sources[name] = sources[big[0]]
                continue
        dynamic.append(node)
    return dynamic
