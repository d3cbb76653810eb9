"""Reading checkpoint files safely, recognising GPEN state dicts, inferring their config, and building the model.

Nothing here executes code from a file: ``.pth``/``.pt``/``.bin`` go through ``torch.load(weights_only=True)`` and
``.safetensors`` through safetensors. Hyper-parameters come from tensor shapes, never from file names.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

import torch

from .checkpoint_file import load_torch_file
from .config import GPENConfig
from .errors import CheckpointReadError, ConfigError, NotAGPENCheckpoint
from .file_scan import inspect_weight_file
from .model import GPEN
from .ops.upfirdn2d import make_blur_kernel

logger = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)
ONNX_SUFFIXES = (".onnx",)  # GPEN-BFR-*.onnx exports, read by structure (onnx_import.py; needs the onnx package)
SUPPORTED_SUFFIXES = TORCH_SUFFIXES + SAFETENSORS_SUFFIXES + ONNX_SUFFIXES

#: Wrapper keys that hold the generator's state dict, in order of preference (EMA weights first).
WRAPPER_KEYS = ("g_ema", "params_ema", "params", "state_dict")

#: Keys that identify other checkpoints people put in the same folders, for a helpful error message.
_OTHER_ARCHITECTURES = (
    ("a GFPGAN face-restoration model", ("conv_body_first.weight", "stylegan_decoder.")),
    ("a CodeFormer face-restoration model", ("quantize.embedding.weight", "ft_layers.")),
    ("a RestoreFormer face-restoration model", ("encoder.conv_in.weight", "quantize.embedding.weight")),
    ("a RetinaFace face detector", ("body.stage1.", "ClassHead.", "LandmarkHead.")),
    ("an ESRGAN/Real-ESRGAN upscaler", ("conv_first.weight", "RRDB_trunk.", "body.0.rdb1.")),
    ("a face-parsing model (ParseNet/BiSeNet)", ("encoder.0.", "context_path.")),
    ("a Stable Diffusion checkpoint", ("model.diffusion_model.",)),
    ("the GPEN discriminator (a -D file), not the generator", ("final_conv.", "convs.0.0.weight")),
)


# --------------------------------------------------------------------------------------------------- reading files
def read_state_dict(path: str | os.PathLike) -> dict:
    """Read a checkpoint file as stored: a mapping of names to tensors (possibly wrapped, see ``WRAPPER_KEYS``).

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
        from .onnx_import import read_onnx_state_dict

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
        raise CheckpointReadError(f"{path.name} is not a readable .safetensors file (truncated or corrupt?): {exc}") from exc


def _read_torch(path: Path, size: int) -> dict:
    loaded = load_torch_file(path, download_hint=DOWNLOAD_HINT)  # weights_only; says why a bad file is bad
    if not isinstance(loaded, Mapping):
        raise NotAGPENCheckpoint(f"{path.name} holds a {type(loaded).__name__}, not a state dict (a dict of tensors)")
    return dict(loaded)


# --------------------------------------------------------------------------------------------- recognising weights
def canonicalize_state_dict(state_dict: Mapping) -> dict[str, torch.Tensor]:
    """Unwrap ``g_ema`` / ``params_ema`` / ``params`` / ``state_dict``, strip a ``module.`` prefix, keep tensors."""
    if not isinstance(state_dict, Mapping):
        raise NotAGPENCheckpoint(f"expected a state dict (a dict of tensors), got {type(state_dict).__name__}")
    current: Mapping = state_dict
    for _ in range(3):  # wrappers can nest, e.g. {'state_dict': {'g_ema': ...}}
        if any(isinstance(v, torch.Tensor) and k.startswith(("generator.", "module.generator.")) for k, v in current.items()):
            break
        inner = next((current[k] for k in WRAPPER_KEYS if isinstance(current.get(k), Mapping)), None)
        if inner is None:
            break
        current = inner
    tensors = {str(k): v for k, v in current.items() if isinstance(v, torch.Tensor)}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    if not tensors:
        keys = ", ".join(list(map(str, current.keys()))[:8])
        raise NotAGPENCheckpoint(f"the checkpoint holds no tensors at its top level (keys: {keys or 'none'})")
    return tensors


def _looks_like(keys: set[str]) -> str | None:
    for description, markers in _OTHER_ARCHITECTURES:
        if all(any(k.startswith(m) or k == m for k in keys) for m in markers):
            return description
    return None


def infer_config(state_dict: Mapping) -> GPENConfig:
    """The GPENConfig of a (canonical) state dict, from tensor shapes only."""
    sd = canonicalize_state_dict(state_dict)
    needed = ("generator.input.input", "ecd0.0.0.weight", "final_linear.0.weight", "generator.style.1.weight")
    missing = [k for k in needed if k not in sd]
    if missing:
        hint = _looks_like(set(sd))
        raise NotAGPENCheckpoint(
            f"not a GPEN checkpoint: missing {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + (f"; this looks like {hint}" if hint else f"; its first keys are {', '.join(list(sd)[:4])}")
        )
    dims = {"generator.input.input": 4, "ecd0.0.0.weight": 4, "generator.style.1.weight": 2}
    wrong = [f"{k} {list(sd[k].shape)}" for k, n in dims.items() if sd[k].dim() != n]
    if wrong:
        raise NotAGPENCheckpoint(f"not a GPEN checkpoint: {wrong[0]} has the wrong number of dimensions")
    encoder_layers = sorted({int(m.group(1)) for k in sd if (m := re.match(r"ecd(\d+)\.", k))})
    if encoder_layers != list(range(len(encoder_layers))):
        raise NotAGPENCheckpoint(f"the encoder layers are not numbered ecd0..ecdN without gaps: found {encoder_layers}")
    size = 2 ** (len(encoder_layers) + 1)
    to_rgbs = len({int(m.group(1)) for k in sd if (m := re.match(r"generator\.to_rgbs\.(\d+)\.", k))})
    if to_rgbs != len(encoder_layers) - 1:
        raise NotAGPENCheckpoint(
            f"encoder and decoder disagree on the size: {len(encoder_layers)} encoder layers mean {size}x{size}, "
            f"but {to_rgbs} decoder steps mean {2 ** (to_rgbs + 2)}x{2 ** (to_rgbs + 2)}"
        )
    if not 16 <= size <= 2048:
        raise NotAGPENCheckpoint(f"{len(encoder_layers)} encoder layers mean a {size}x{size} GPEN; supported: 16..2048")
    n_mlp = len({int(m.group(1)) for k in sd if (m := re.match(r"generator\.style\.(\d+)\.weight$", k))})
    style_dim = int(sd["generator.style.1.weight"].shape[0])
    c4 = int(sd["generator.input.input"].shape[1])
    c_top = int(sd["ecd0.0.0.weight"].shape[0])
    narrow = c4 / 512
    for multiplier in range(1, 9):
        try:
            config = GPENConfig(size=size, channel_multiplier=multiplier, narrow=narrow, style_dim=style_dim,
                                n_mlp=n_mlp)
        except ConfigError as exc:
            raise NotAGPENCheckpoint(f"these GPEN tensors describe an impossible network: {exc}") from exc
        if config.channels(size) == c_top:
            return config
    raise NotAGPENCheckpoint(
        f"no GPEN channel table fits these shapes: {c4} channels at 4x4 but {c_top} at {size}x{size}"
    )


def expected_shapes(config: GPENConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of a GPEN with ``config`` and its shape, in checkpoint order (built on the meta device)."""
    with torch.device("meta"):
        model = GPEN(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check_against(sd: dict[str, torch.Tensor], config: GPENConfig) -> dict[str, torch.Tensor]:
    expected = expected_shapes(config)
    sd = dict(sd)
    for key in expected:  # the blur kernels are constants; fill them in when a conversion dropped them
        if key.endswith(".kernel") and key not in sd:
            gain = 1.0 if key.startswith("ecd") else 4.0
            sd[key] = make_blur_kernel(gain=gain)
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {list(sd[k].shape)} (expected {list(expected[k])})"
             for k in expected if k in sd and tuple(sd[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append(f"missing {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if unexpected:
        problems.append(f"unexpected {unexpected[0]}" + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    if wrong:
        problems.append(f"shape mismatch {wrong[0]}" + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""))
    if problems:
        hint = _looks_like(set(sd))
        raise NotAGPENCheckpoint(
            f"not a GPEN-{config.size} FullGenerator checkpoint: " + "; ".join(problems)
            + (f"; this looks like {hint}" if hint else "")
        )
    return sd


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
    sd = _check_against(sd, config)
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
