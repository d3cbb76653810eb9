"""A weight file inspected before anything in it is loaded: what it declares must fit ``budgets.py``.

``torch.load(weights_only=True)`` runs no code from a file, but it allocates what the file declares: a bytearray of
any length, a storage of any size, a zip record inflated whole. ``inspect_weight_file`` reads only the small parts
that declare those sizes and refuses a file that declares more than a GPEN checkpoint needs:

* the zip format (``torch.save`` since PyTorch 1.6): the end-of-directory record, then the directory (declared sizes
  of every record; nothing is inflated), then ``data.pkl`` (at most ``MAX_PICKLE_BYTES``);
* the legacy format (a pickle stream, then the storages' bytes): the pickles at its start;
* safetensors: the 8-byte header length and the JSON header (dtypes, shapes and offsets against the file size).

A pickle is scanned with ``pickletools.genops`` while a small model of the unpickler's stack follows which callable
gets which arguments, so ``bytearray(5 GiB)``, a storage of a billion elements, a tensor of a huge shape, and the
sparse, meta, quantized or nested tensors that no GPEN checkpoint holds are refused with a clear message. Regular
files only: a FIFO, socket or device is never opened (opening a FIFO for reading blocks).
"""

from __future__ import annotations

import io
import json
import math
import os
import pickletools
import stat
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CheckpointReadError
from .budgets import (
    MAX_PICKLE_BYTES,
    MAX_PICKLED_BUFFER_BYTES,
    MAX_RECORD_BYTES,
    MAX_SAFETENSORS_HEADER_BYTES,
    MAX_TENSOR_ELEMENTS,
    MAX_TENSORS,
    MAX_WEIGHT_FILE_BYTES,
    MiB,
)

#: bytes per element of the storage types a pickle names (``torch.FloatStorage``, ...); an unknown one counts 16
_ELEMENT_BYTES = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8, "IntStorage": 4,
    "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1, "ComplexDoubleStorage": 16,
    "ComplexFloatStorage": 8, "QInt8Storage": 1, "QUInt8Storage": 1, "QInt32Storage": 4, "QUInt4x2Storage": 1,
    "QUInt2x4Storage": 1, "UntypedStorage": 1, "_UntypedStorage": 1,
}
#: tensor kinds a GPEN checkpoint never holds, by the function that rebuilds them
_REFUSED_REBUILDS = {
    "_rebuild_sparse_tensor": "a sparse tensor",
    "_rebuild_sparse_csr_tensor": "a sparse tensor",
    "_rebuild_meta_tensor_no_storage": "a meta tensor (a shape without data)",
    "_rebuild_qtensor": "a quantized tensor",
    "_rebuild_nested_tensor": "a nested tensor",
    "_rebuild_wrapper_subclass": "a tensor subclass without data",
    "_rebuild_device_tensor_from_numpy": "a tensor rebuilt from a NumPy array",
    "_rebuild_device_tensor_from_cpu_tensor": "a device tensor",
    "_rebuild_njt": "a nested tensor",
}
_BUFFER_CALLABLES = {("builtins", "bytearray"), ("builtins", "bytes"), ("__builtin__", "bytearray"),
                     ("__builtin__", "bytes")}
_TENSOR_REBUILDS = {"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3"}
_SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                            "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "C64": 8}


class _Refused(Exception):
    """Internal: the file declares more than a budget allows; the message says what (the caller adds the file name
    and advice)."""


class _Corrupt(_Refused):
    """Internal: the file's structure is malformed (a pickle, zip directory or header that does not add up)."""


@dataclass
class PickleFacts:
    """What a scanned pickle declares: its storages as (key, bytes) and how many tensors it rebuilds."""

    storages: dict[str, int] = field(default_factory=dict)
    tensors: int = 0


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


_MARK = object()
_OPAQUE = object()  # a value the model of the stack does not follow (a container, a call's result)
_PUSH_ARG = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "STRING", "BINSTRING", "SHORT_BINSTRING",
             "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE",
             "BINUNICODE8", "FLOAT", "BINFLOAT"}


def _mib(count: int) -> str:
    return f"{count / MiB:,.1f} MiB"


def _elements(shape) -> int | None:
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        return None
    if any(d < 0 for d in shape):
        raise _Refused(f"a tensor has a negative size in its shape {list(shape)}")
    return math.prod(shape)


def _pop_to_mark(stack: list) -> list:
    for index in range(len(stack) - 1, -1, -1):
        if stack[index] is _MARK:
            items = stack[index + 1:]
            del stack[index:]
            return items
    raise _Corrupt("its pickle is malformed (a missing MARK)")


def _check_call(callee, args, facts: PickleFacts) -> None:
    if not isinstance(callee, _Global):
        return
    if callee.name in _REFUSED_REBUILDS:
        raise _Refused(f"it holds {_REFUSED_REBUILDS[callee.name]} ({callee.module}.{callee.name}); GPEN weights are "
                       f"ordinary dense tensors")
    if not isinstance(args, tuple):
        return
    if (callee.module, callee.name) in _BUFFER_CALLABLES:
        sizes = [a for a in args if isinstance(a, int) and not isinstance(a, bool)]
        if sizes and max(sizes) > MAX_PICKLED_BUFFER_BYTES:
            raise _Refused(f"its pickle asks for a {_mib(max(sizes))} Python {callee.name} (no checkpoint holds one; "
                           f"limit {_mib(MAX_PICKLED_BUFFER_BYTES)})")
    if callee.name in _TENSOR_REBUILDS and callee.module.startswith("torch"):
        facts.tensors += 1
        shape = args[2:3]  # (storage, offset, size, stride, ...)
        count = _elements(shape[0]) if shape else None
        if count is not None and count > MAX_TENSOR_ELEMENTS:
            raise _Refused(f"a tensor declares the shape {list(shape[0])} ({count:,} elements; the largest GPEN "
                           f"tensor has 4,718,592, limit {MAX_TENSOR_ELEMENTS:,})")


def _check_persistent_id(pid, facts: PickleFacts) -> None:
    """('storage', storage type, key, location, numel[, view]) as torch.save writes it."""
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
        return
    storage_type, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
        raise _Corrupt(f"a storage declares {numel!r} elements")
    per_element = _ELEMENT_BYTES.get(storage_type.name, 16) if isinstance(storage_type, _Global) else 16
    size = numel * per_element
    if size > MAX_RECORD_BYTES:
        raise _Refused(f"a tensor storage declares {_mib(size)} ({numel:,} elements; the largest GPEN tensor is "
                       f"18 MiB as float32, limit {_mib(MAX_RECORD_BYTES)})")
    facts.storages[str(key)] = max(size, facts.storages.get(str(key), 0))
    if len(facts.storages) > MAX_TENSORS:
        raise _Refused(f"it declares more than {MAX_TENSORS:,} tensor storages (GPEN-2048 has 201)")


def scan_pickle(stream: io.BytesIO, facts: PickleFacts | None = None) -> PickleFacts:
    """Follow one pickle in ``stream`` (from its position to its STOP) and check what it would build; raises
    ``_Refused`` (via ``inspect_weight_file``) for anything over budget, ``ValueError`` when the pickle runs out."""
    facts = facts if facts is not None else PickleFacts()
    stack: list = []
    memo: dict = {}
    for opcode, arg, _pos in pickletools.genops(stream):
        name = opcode.name
        if name in ("PROTO", "FRAME"):
            continue
        if name == "STOP":
            return facts
        if name == "MARK":
            stack.append(_MARK)
        elif name in _PUSH_ARG:
            stack.append(arg)
        elif name == "NONE":
            stack.append(None)
        elif name in ("NEWTRUE", "NEWFALSE"):
            stack.append(name == "NEWTRUE")
        elif name == "GLOBAL":
            module, _, attribute = str(arg).partition(" ")
            stack.append(_Global(module, attribute))
        elif name == "STACK_GLOBAL":
            if len(stack) < 2:
                raise _Corrupt("its pickle is malformed (STACK_GLOBAL on a short stack)")
            attribute, module = stack.pop(), stack.pop()
            stack.append(_Global(str(module), str(attribute)))
        elif name == "MEMOIZE":
            if not stack:
                raise _Corrupt("its pickle is malformed (MEMOIZE on an empty stack)")
            memo[len(memo)] = stack[-1]
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            if not stack:
                raise _Corrupt("its pickle is malformed (PUT on an empty stack)")
            memo[arg] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in memo:
                raise _Corrupt(f"its pickle is malformed (memo entry {arg} read before it was written)")
            stack.append(memo[arg])
        elif name == "TUPLE":
            stack.append(tuple(_pop_to_mark(stack)))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            count = int(name[-1])
            if len(stack) < count:
                raise _Corrupt("its pickle is malformed (a tuple of missing items)")
            items = tuple(stack[-count:])
            del stack[-count:]
            stack.append(items)
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name == "REDUCE":
            if len(stack) < 2:
                raise _Corrupt("its pickle is malformed (REDUCE on a short stack)")
            args, callee = stack.pop(), stack.pop()
            _check_call(callee, args, facts)
            stack.append(_OPAQUE)
        elif name == "BINPERSID":
            if not stack:
                raise _Corrupt("its pickle is malformed (BINPERSID on an empty stack)")
            _check_persistent_id(stack.pop(), facts)
            stack.append(_OPAQUE)
        elif name in ("EXT1", "EXT2", "EXT4"):
            raise _Refused(f"its pickle uses the copyreg extension registry ({name}), which checkpoints never use")
        else:  # every other opcode: pop what it takes (down to a MARK where it takes a slice), push opaque results
            before = opcode.stack_before
            if pickletools.markobject in before:
                _pop_to_mark(stack)
                before = before[:before.index(pickletools.markobject)]
            if len(stack) < len(before):
                raise _Corrupt(f"its pickle is malformed ({name} on a short stack)")
            del stack[len(stack) - len(before):]
            stack.extend(_OPAQUE for _ in opcode.stack_after)
    raise ValueError("pickle exhausted before STOP")


# --------------------------------------------------------------------------------------------------- the formats
def _zip_entry_count(path: Path, size: int) -> int:
    """The number of entries the zip's end-of-central-directory record declares (zip64 too), read from its tail."""
    with open(path, "rb") as handle:
        tail_size = min(size, 65536 + 22)
        handle.seek(size - tail_size)
        tail = handle.read(tail_size)
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            raise zipfile.BadZipFile("no end-of-central-directory record")
        entries = struct.unpack("<H", tail[at + 10:at + 12])[0]
        if entries == 0xFFFF and at >= 20 and tail[at - 20:at - 16] == b"PK\x06\x07":  # zip64 locator
            offset = struct.unpack("<Q", tail[at - 12:at - 4])[0]
            if offset + 56 > size:
                raise zipfile.BadZipFile("the zip64 end record lies past the file's end")
            handle.seek(offset)
            record = handle.read(56)
            if record[:4] != b"PK\x06\x06":
                raise zipfile.BadZipFile("no zip64 end-of-central-directory record")
            entries = struct.unpack("<Q", record[32:40])[0]
    return entries


def _check_zip(path: Path, size: int) -> PickleFacts:
    entries = _zip_entry_count(path, size)
    if entries > MAX_TENSORS + 16:
        raise _Refused(f"its zip directory declares {entries:,} records (limit {MAX_TENSORS + 16:,}; GPEN-2048 has "
                       f"about 205)")
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        total = 0
        for info in infos:
            if info.file_size > MAX_RECORD_BYTES:
                raise _Refused(f"its zip record {info.filename!r} declares {_mib(info.file_size)} "
                               f"({_mib(info.compress_size)} stored; limit {_mib(MAX_RECORD_BYTES)} per record, the "
                               f"largest GPEN tensor is 18 MiB)")
            total += info.file_size
        if total > MAX_WEIGHT_FILE_BYTES:
            raise _Refused(f"its zip records declare {_mib(total)} in all (limit {_mib(MAX_WEIGHT_FILE_BYTES)}; "
                           f"GPEN-2048 is 272 MiB)")
        pickles = [info for info in infos if info.filename == "data.pkl"
                   or (info.filename.endswith("/data.pkl") and info.filename.count("/") == 1)]
        if len(pickles) != 1:
            raise _Refused(f"it is a zip with {len(pickles)} data.pkl records, not a PyTorch checkpoint (which has "
                           f"one)")
        info = pickles[0]
        if info.file_size > MAX_PICKLE_BYTES:
            raise _Refused(f"its data.pkl declares {_mib(info.file_size)} (limit {_mib(MAX_PICKLE_BYTES)}; a GPEN "
                           f"state dict's is about 20 KB)")
        with archive.open(info) as handle:
            data = handle.read(MAX_PICKLE_BYTES + 1)
        prefix = info.filename[:-len("data.pkl")]
        sizes = {i.filename[len(prefix) + len("data/"):]: i.file_size for i in infos
                 if i.filename.startswith(prefix + "data/")}
    facts = scan_pickle(io.BytesIO(data))
    for key, wanted in facts.storages.items():
        if key in sizes and sizes[key] < wanted:
            raise _Corrupt(f"tensor storage {key} declares {wanted:,} bytes but its record holds {sizes[key]:,}")
    return facts


def _check_legacy(path: Path, size: int) -> PickleFacts:
    """PyTorch's legacy format: magic number, protocol, system info, the object, the storage keys (five pickles),
    then each storage's bytes. The storages are allocated from what the object's pickle declares."""
    with open(path, "rb") as handle:
        head = handle.read(MAX_PICKLE_BYTES)
    stream = io.BytesIO(head)
    facts = PickleFacts()
    try:
        for _ in range(5):
            if stream.tell() == size:  # fewer pickles than the format has: each was checked, torch.load explains
                break
            scan_pickle(stream, facts)
    except ValueError:
        if size > len(head):
            raise _Refused(f"its pickled part is longer than {_mib(MAX_PICKLE_BYTES)} (a GPEN state dict's is "
                           f"about 20 KB)") from None
        raise
    declared = sum(facts.storages.values())
    if declared > size:
        raise _Corrupt(f"its storages declare {declared:,} bytes, more than the file's {size:,}")
    return facts


def _check_safetensors(path: Path, size: int) -> None:
    with open(path, "rb") as handle:
        length = struct.unpack("<Q", handle.read(8))[0]
        if length > MAX_SAFETENSORS_HEADER_BYTES:
            raise _Refused(f"its header declares {length:,} bytes (limit {_mib(MAX_SAFETENSORS_HEADER_BYTES)}; "
                           f"GPEN-2048's is about 20 KB)")
        if length + 8 > size:
            raise _Corrupt(f"its header declares {length:,} bytes of a {size:,}-byte file")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _Corrupt(f"its JSON header is corrupt ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise _Corrupt("its header is not a JSON object")
    header.pop("__metadata__", None)
    if len(header) > MAX_TENSORS:
        raise _Refused(f"it declares {len(header):,} tensors (limit {MAX_TENSORS:,}; GPEN-2048 has 201)")
    data_size = size - 8 - length
    for key, entry in header.items():
        if not isinstance(entry, dict) or entry.get("dtype") not in _SAFETENSORS_DTYPE_BYTES:
            raise _Corrupt(f"tensor {str(key)[:80]!r} has no known dtype")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        count = _elements(tuple(shape)) if isinstance(shape, list) else None
        if count is None or not (isinstance(offsets, list) and len(offsets) == 2
                                 and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise _Corrupt(f"tensor {str(key)[:80]!r} has a corrupt shape or offsets")
        if count > MAX_TENSOR_ELEMENTS:
            raise _Refused(f"tensor {str(key)[:80]!r} declares {count:,} elements (limit {MAX_TENSOR_ELEMENTS:,})")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size or end - begin != count * _SAFETENSORS_DTYPE_BYTES[entry["dtype"]]:
            raise _Corrupt(f"tensor {str(key)[:80]!r} ({entry['dtype']} {shape}) declares bytes {begin}..{end} of "
                           f"{data_size:,}: the file is truncated or corrupt")


#: bytes read from a file's start to tell what it is (``describe_non_checkpoint``)
HEAD_BYTES = 512
_PICKLE_PROTOCOLS = range(2, 6)


def _head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(HEAD_BYTES)


def describe_failed_download(path: Path, *, download_hint: str) -> str | None:
    """A message when ``path`` holds what a failed download leaves under a weight file's name (an HTML page, a Git
    LFS pointer), whatever the format expected; None otherwise. ``download_hint`` ends the message."""
    size = path.stat().st_size
    head = _head(path)
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")) or b"<html" in text[:200]:
        return (f"{path.name} looks like an HTML page ({size:,} bytes), not a weight file: probably a failed download "
                f"(an error or login page saved under the file's name); delete it and download it again "
                f"{download_hint}")
    if head.startswith(b"version https://git-lfs"):
        return (f"{path.name} is a Git LFS pointer ({size:,} bytes), not the weights: fetch the real file "
                f"(git lfs pull) or delete it and download it again {download_hint}")
    return None


def describe_non_checkpoint(path: Path, *, download_hint: str) -> str | None:
    """A message when ``path``'s bytes are not a zip (PyTorch), pickle (old PyTorch) or safetensors file at all
    (``describe_failed_download`` first), or are a zip cut short; None when they look like a checkpoint.
    ``download_hint``: where to get the file again (e.g. "from https://..."); it ends the message."""
    failed = describe_failed_download(path, download_hint=download_hint)
    if failed is not None:
        return failed
    size = path.stat().st_size
    head = _head(path)
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):  # the central directory is at the end: a cut file has none
            return (f"{path.name} is truncated: a zip checkpoint of {size:,} bytes without its end (the download or "
                    f"copy stopped early); delete it and download it again {download_hint}")
        return None
    if len(head) >= 2 and head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS:
        return None  # PyTorch's legacy format (a pickle)
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < size:
        return None  # safetensors: a little-endian header length, then JSON
    return (f"{path.name} is not a checkpoint: {size:,} bytes of non-checkpoint data (starting {head[:12]!r}), "
            f"neither a PyTorch (zip or pickle) nor a safetensors file; delete it and download it again "
            f"{download_hint}")


def inspect_weight_file(path: str | os.PathLike, *, download_hint: str) -> str:
    """Check ``path`` against ``budgets.py`` before it is loaded; returns its format ("zip", "legacy" or
    "safetensors"). Raises ``CheckpointReadError`` naming the file and what is wrong (not a regular file, too big,
    not a checkpoint, truncated, or declaring more than a GPEN checkpoint needs). Reads at most the zip directory and
    ``MAX_PICKLE_BYTES`` of pickle, or the safetensors header; allocates no tensor."""
    path = Path(path)
    name = path.name
    if "\0" in str(path):
        raise CheckpointReadError(f"{name!r}: a file name cannot contain a NUL byte; this is not a weight file's name")
    size = 0
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise CheckpointReadError(f"{name} is a directory, not a weight file")
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointReadError(f"{name} is not a regular file (a FIFO, socket or device): not a weight file")
        size = info.st_size
        if size == 0:
            raise CheckpointReadError(f"{name} is an empty file (0 bytes): the download or copy probably failed")
        if size > MAX_WEIGHT_FILE_BYTES:
            raise CheckpointReadError(
                f"{name} is {_mib(size)}; the largest GPEN checkpoint (GPEN-BFR-2048) is 272 MiB and weight files "
                f"over {_mib(MAX_WEIGHT_FILE_BYTES)} are not read: this is not a GPEN model")
        problem = describe_non_checkpoint(path, download_hint=download_hint)
        if problem is not None:
            raise CheckpointReadError(problem)
        with open(path, "rb") as handle:
            head = handle.read(9)
        if head.startswith(b"PK\x03\x04"):
            _check_zip(path, size)
            return "zip"
        if head[:1] == b"\x80":
            _check_legacy(path, size)
            return "legacy"
        try:
            _check_safetensors(path, size)
        except _Corrupt as exc:
            raise CheckpointReadError(f"{name} is not a readable .safetensors file (truncated or corrupt): {exc}; "
                                      f"delete it and download it again {download_hint}") from None
        return "safetensors"
    except _Corrupt as exc:
        raise CheckpointReadError(f"{name} ({size:,} bytes) is truncated or damaged: {exc}; delete it and download "
                                  f"it again {download_hint}") from None
    except _Refused as exc:
        raise CheckpointReadError(f"{name} ({size:,} bytes) was refused before loading: {exc}. This is not a GPEN "
                                  f"checkpoint (or it is damaged); delete it or download it again "
                                  f"{download_hint}") from None
    except (ValueError, EOFError, zipfile.BadZipFile, struct.error, KeyError, IndexError, NotImplementedError,
            OverflowError) as exc:  # a pickle, zip or header that ends early or is malformed
        raise CheckpointReadError(f"{name} is truncated or damaged ({size:,} bytes; the download or copy probably "
                                  f"stopped early); delete it and download it again {download_hint}") from exc
    except OSError as exc:
        raise CheckpointReadError(f"{name} could not be read: {exc.strerror or exc}") from exc
