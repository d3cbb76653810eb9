"""Converting any GPEN file this package reads (``.onnx``, ``.pth``, ...) into a plain ``.safetensors`` state dict.

The output is the released checkpoint layout (every key, blur kernels included, float32), handed as bytes to the
caller's atomic writer (``cli.py convert``: the batch jobs' one, a temporary file renamed into place), so an
interrupted conversion never leaves a half-written model and an existing file is replaced only when asked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from ..config import GPENConfig
from ..errors import GPENError
from ..state_dict import canonicalize_state_dict, check_state_dict, infer_config
from .loading import read_state_dict


class ConversionError(GPENError):
    """The destination cannot be written as asked (exists, is the source, wrong suffix)."""


def convert_to_safetensors(source: str | os.PathLike, destination: str | os.PathLike, *,
                           write: Callable[[Path, bytes], None], overwrite: bool = False) -> GPENConfig:
    """Read ``source`` (any supported GPEN file), check it is a complete GPEN FullGenerator, and write its state
    dict to ``destination`` (``.safetensors``) through ``write(destination, data)``: the caller's atomic writer
    (the pack has one, ``face_jobs.writer.write_atomically``; the network package writes no file itself). Returns
    the inferred config."""
    from safetensors.torch import save

    source, destination = Path(source), Path(destination)
    if destination.suffix.lower() != ".safetensors":
        raise ConversionError(f"the converted file must end in .safetensors, got {destination.name}")
    if destination.exists() and source.exists() and destination.resolve() == source.resolve():
        raise ConversionError(f"{destination} is the file being converted; choose another output name")
    if destination.exists() and not overwrite:
        raise ConversionError(f"{destination} already exists; pass --overwrite to replace it")
    state_dict = canonicalize_state_dict(read_state_dict(source))
    config = infer_config(state_dict)
    state_dict = check_state_dict(state_dict, config)
    tensors = {k: v.float().contiguous() for k, v in state_dict.items()}
    metadata = {"format": "pt", "converted_from": source.name,
                "gpen_config": json.dumps({"size": config.size, "channel_multiplier": config.channel_multiplier,
                                           "narrow": config.narrow, "style_dim": config.style_dim,
                                           "n_mlp": config.n_mlp})}
    write(destination, save(tensors, metadata=metadata))
    return config
