"""Reading checkpoint files safely (the one dispatcher by suffix) and building the model from their state dicts.

What a state dict says (its config, the keys it must hold, what else it might be) is ``state_dict.py``. Nothing here
executes code from a file: ``.pth``/``.pt``/``.bin`` go through ``torch.load(weights_only=True)`` and
``.safetensors`` through safetensors. Hyper-parameters come from tensor shapes, never from file names.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import CheckpointReadError, NotAGPENCheckpoint
from ..model import GPEN
from ..state_dict import canonicalize_state_dict, check_state_dict, infer_config
from .checkpoint_file import load_torch_file
from .file_scan import inspect_weight_file
from .onnx_import import read_onnx_state_dict

logger = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)
ONNX_SUFFIXES = (".onnx",)  # GPEN-BFR-*.onnx exports, read by structure (onnx_import.py; needs the onnx package)
SUPPORTED_SUFFIXES = TORCH_SUFFIXES + SAFETENSORS_SUFFIXES + ONNX_SUFFIXES


# --------------------------------------------------------------------------------------------------- reading files
def read_state_dict(path: str | os.PathLike) -> dict:
    """Read a checkpoint file as stored: a mapping of names to tensors (possibly wrapped: ``state_dict.WRAPPER_KEYS``).

    Raises ``CheckpointReadError`` with a specific message for a missing path, a directory, an empty file, an
    unsupported suffix, a truncated or corrupt file, and a pickle that holds anything but tensors (refused unrun).
    """
    path = Path(path)
    if "\0" in str(path):
        raise CheckpointReadError(f"{str(path)!r}: a file name cannot contain a NUL byte; this is not a "
                                  f"checkpoint's name")
    try:
        exists = path.exists()
        info = path.stat() if exists else None
    except OSError as exc:
        raise CheckpointReadError(f"{path.name} could not be read: {exc.strerror or exc}") from exc
    if info is None:
        raise CheckpointReadError(f"checkpoint not found: {path}")
    if stat.S_ISDIR(info.st_mode):
        raise CheckpointReadError(f"{path} is a directory; pass the checkpoint file inside it (.pth or .safetensors)")
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read: never opened
        raise CheckpointReadError(f"{path.name} is not a regular file (a FIFO, socket or device): not a checkpoint")
    size = info.st_size
    if size == 0:
        raise CheckpointReadError(f"{path} is an empty file (0 bytes): the download or copy probably failed")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _read_safetensors(path)
    if suffix in TORCH_SUFFIXES:
        return _read_torch(path, size)
    if suffix in ONNX_SUFFIXES:
        return read_onnx_state_dict(path)
    raise CheckpointReadError(
        f"{path.name}: unsupported file type {suffix or '(none)'}; expected one of {', '.join(SUPPORTED_SUFFIXES)}"
    )


#: where a bad GPEN file should be fetched again (the end of the checkpoint error messages)
DOWNLOAD_HINT = "from its source (README: Model files)"


def _read_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    inspect_weight_file(path, download_hint=DOWNLOAD_HINT)  # the header held to budgets.py before anything is read
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
        raise CheckpointReadError(f"{path.name} is not a readable .safetensors file (truncated or corrupt?): "
                                  f"{exc}") from exc


def _read_torch(path: Path, size: int) -> dict:
    loaded = load_torch_file(path, download_hint=DOWNLOAD_HINT)  # weights_only; says why a bad file is bad
    if not isinstance(loaded, Mapping):
        raise NotAGPENCheckpoint(f"{path.name} holds a {type(loaded).__name__}, not a state dict (a dict of tensors)")
    return dict(loaded)


# --------------------------------------------------------------------------------------------- recognising weights
def _check_tensor_kinds(sd: Mapping[str, torch.Tensor]) -> None:
    """GPEN weights are dense real tensors with data: a sparse, meta, quantized, nested or complex one (which a
    damaged or hostile file can hold, or a caller pass) is refused by name before any arithmetic touches it."""
    for key, value in sd.items():
        kind = ("sparse" if value.layout != torch.strided else "meta (a shape without data)" if value.is_meta else
                "quantized" if value.is_quantized else "nested" if value.is_nested else
                "complex" if value.is_complex() else None)
        if kind is not None:
            raise CheckpointReadError(f"the weight {key} is a {kind} tensor; GPEN weights are ordinary dense real "
                                      f"tensors: the file is damaged or not a GPEN checkpoint")


# ----------------------------------------------------------------------------------------------------- building
def load_gpen(
    state_dict: Mapping, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> GPEN:
    """Build an eval-mode GPEN from a state dict (wrapped or not), its config inferred from the tensor shapes.

    The weights are loaded strictly (every key, every shape); NaN or infinite weights are a ``CheckpointReadError``.
    ``dtype`` defaults to float32 whatever the file stores.
    """
    sd = canonicalize_state_dict(state_dict)
    _check_tensor_kinds(sd)
    config = infer_config(sd)
    sd = check_state_dict(sd, config)
    broken = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointReadError(
            f"{len(broken)} weight tensor(s) hold NaN or infinite values (first: {broken[0]}): the file is damaged or "
            f"comes from a training run that diverged; download it again from its source"
        )
    floating = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    with torch.device("meta"):
        model = GPEN(config)
    model.load_state_dict(floating, strict=True, assign=True)
    model.requires_grad_(False).eval()
    model.to(device=device, dtype=dtype or torch.float32)
    logger.debug("loaded GPEN-%d (channel_multiplier=%d, narrow=%g)", config.size, config.channel_multiplier,
                 config.narrow)
    return model


def load_gpen_file(
    path: str | os.PathLike, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> GPEN:
    """``load_gpen(read_state_dict(path))`` with the file name in any error message."""
    state_dict = read_state_dict(path)
    try:
        return load_gpen(state_dict, device=device, dtype=dtype)
    except (NotAGPENCheckpoint, CheckpointReadError) as exc:
        raise type(exc)(f"{Path(path).name}: {exc}") from exc
