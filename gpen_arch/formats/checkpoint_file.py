"""Why a checkpoint file cannot be read: not a checkpoint at all, truncated, or a pickle that wants to run code.

``torch.load(weights_only=True)`` reports all three as errors whose text ends in advice to load with
``weights_only=False``, which would run whatever code the file holds. This module (with
``file_scan.describe_non_checkpoint`` for bytes that are no checkpoint at all) looks at the file's bytes instead and
says which case it is, and what to do (download it again; use a .safetensors version), never passing that advice
on. ``load_torch_file`` and ``peek_torch_file`` (names and shapes for a model list) are the one place this package
calls ``torch.load``, always after ``file_scan.inspect_weight_file`` held the file to ``budgets.py``.
"""

from __future__ import annotations

import collections
import io
import pickle
import re
import struct
import zipfile
from pathlib import Path

import torch

from ..errors import CheckpointReadError
from .budgets import MAX_PICKLE_BYTES
from .file_scan import inspect_weight_file

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")  # torch names the first global it refused


def describe_load_error(path: Path, exc: BaseException, *, download_hint: str) -> str:
    """The message for ``torch.load(path, weights_only=True)`` having raised ``exc``: code refused, truncated, or
    damaged; torch's own text is passed on only where it carries no loading advice."""
    size = path.stat().st_size
    detail = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and ("weights_only" in detail or "Unsupported global" in detail
                                                    or "GLOBAL" in detail):
        match = _GLOBAL.search(detail)
        what = f"Python objects ({match.group(1)})" if match else "Python objects"
        return (f"{path.name} was refused: besides tensors it holds {what} whose loading would run code from the "
                f"file, so it was not loaded. Use a .safetensors version of this model, or a plain weights file "
                f"from its official source")
    lowered = detail.lower()
    if isinstance(exc, (EOFError, zipfile.BadZipFile, struct.error)) or any(
            mark in lowered for mark in ("ran out of input", "unexpected eof", "central directory", "truncated",
                                         "failed reading")):
        return (f"{path.name} is truncated or damaged ({size:,} bytes; the download or copy probably stopped "
                f"early); delete it and download it again {download_hint}")
    first = (detail.strip().splitlines() or [type(exc).__name__])[0][:200]
    if "weights_only" in first or "trust" in first:
        first = type(exc).__name__
    return (f"{path.name} ({size:,} bytes) is damaged: it is not a readable checkpoint ({first}); delete it and "
            f"download it again {download_hint}")


#: what torch.load raises on a damaged or hostile file (besides OSError): pickle and zip errors, a file that ends
#: early, a storage that does not fit, malformed values (AssertionError: the legacy reader's own checks)
_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, AttributeError,
                ImportError, TypeError, KeyError, IndexError, struct.error, AssertionError, NotImplementedError,
                OverflowError, RecursionError)


def load_torch_file(path: str | Path, *, download_hint: str = "from its source") -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)`` after ``file_scan.inspect_weight_file`` held what
    the file declares to ``budgets.py``, with ``CheckpointReadError`` saying why a file cannot be read (see the module
    doc). Nothing in the file is ever executed."""
    path = Path(path)
    inspect_weight_file(path, download_hint=download_hint)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except OSError as exc:
        raise CheckpointReadError(f"{path.name} could not be read: {exc.strerror or exc}") from exc
    except MemoryError as exc:  # within the budgets: a real allocation failure, but of reading, not of a batch
        raise CheckpointReadError(f"{path.name} ({path.stat().st_size:,} bytes) could not be read: out of memory "
                                  f"while loading it; close other programs or models and try again") from exc
    except _LOAD_ERRORS as exc:
        raise CheckpointReadError(describe_load_error(path, exc, download_hint=download_hint)) from exc


def peek_torch_file(path: str | Path, *, download_hint: str = "from its source") -> object | None:
    """Tensor names and shapes for a model list, without reading any tensor data: the file is inspected
    (``inspect_weight_file``), then a zip checkpoint is loaded onto the meta device (``weights_only``) and a legacy one
    has its object pickle read with every tensor rebuilt on the meta device (``_read_legacy_shapes``): no storage is
    read or allocated. Raises ``CheckpointReadError`` for a file that cannot be read or is refused."""
    path = Path(path)
    kind = inspect_weight_file(path, download_hint=download_hint)
    try:
        if kind == "legacy":
            return _read_legacy_shapes(path)
        if kind != "zip":
            return None
        return torch.load(str(path), map_location="meta", weights_only=True)
    except OSError as exc:
        raise CheckpointReadError(f"{path.name} could not be read: {exc.strerror or exc}") from exc
    except (*_LOAD_ERRORS, pickle.UnpicklingError) as exc:
        raise CheckpointReadError(describe_load_error(path, exc, download_hint=download_hint)) from exc


#: PyTorch's legacy typed storage classes (pickled by name) and the element type each holds
_LEGACY_STORAGES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


def _meta_tensor(storage, storage_offset, size, stride, *args) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` (and ``_rebuild_tensor``) as a shape: a tensor on the meta device."""
    if not isinstance(storage, torch.dtype):
        raise pickle.UnpicklingError("a tensor whose storage is not a legacy typed storage")
    return torch.empty(tuple(int(n) for n in size), dtype=storage, device="meta")


class _LegacyShapeUnpickler(pickle.Unpickler):
    """The pickles of PyTorch's legacy format, read with a closed list of globals: an ordered dict, the typed storage
    classes (as their element type) and the tensor and parameter rebuilders (as meta tensors). A storage reference
    (``persistent_load``) stands for its element type; no storage byte is read. Anything else is refused, so nothing in
    the file runs."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _LEGACY_STORAGES:
            return _LEGACY_STORAGES[name]
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _meta_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, *args: data
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name} is not something a weight file holds")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, element count): the type was resolved by find_class
        if not (isinstance(pid, tuple) and len(pid) >= 2 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise pickle.UnpicklingError("a persistent reference that is not a legacy storage")
        return pid[1]


def _read_legacy_shapes(path: Path) -> object:
    """The object a legacy-format file holds (its fourth pickle, after the magic number, the protocol version and
    the system info), each tensor a meta tensor of its shape and type; the pickles were held to the budgets by
    ``inspect_weight_file``, which read at most ``MAX_PICKLE_BYTES`` of them."""
    with open(path, "rb") as handle:
        stream = io.BytesIO(handle.read(MAX_PICKLE_BYTES))
    unpickler = _LegacyShapeUnpickler(stream)
    for _ in range(3):  # magic number, protocol version, system info
        unpickler.load()
    return unpickler.load()
