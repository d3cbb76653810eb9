"""gpen_arch: an independent pure-PyTorch implementation of GPEN (GAN Prior Embedded Network, CVPR 2021).

Loads every released GPEN FullGenerator checkpoint (GPEN-BFR-256/512/1024/2048, GPEN-Colorization-1024,
GPEN-Inpainting-1024, GPEN-Seg2face-512) and reproduces the official outputs. Imports only the standard library,
torch, numpy and safetensors; knows nothing of ComfyUI.

    from gpen_arch import read_state_dict, load_gpen
    model = load_gpen(read_state_dict("GPEN-BFR-2048.pth"), device="cuda", dtype=torch.float16)
    restored = model(faces)  # [N, 3, 2048, 2048] RGB in [-1, 1] -> raw output (clamp it yourself)

Layout (imports point down only): ``formats/`` (weight files, ONNX, conversion) -> ``model.py`` (``GPEN``, the
reference forward) -> ``runtime/`` (fast plan and forward, derived weights, CUDA graph, strips, memory estimate) ->
the network's parts (``generator.py``, ``layers.py``, ``ops/``); ``state_dict.py`` (config from shapes, the keys a
config means, what else a file might be), ``config.py``, ``errors.py`` and ``interrupt.py`` are leaves.
"""

from .config import RELEASED_CONFIGS, GPENConfig
from .errors import CheckpointReadError, ConfigError, GPENError, NotAGPENCheckpoint
from .formats.loading import SUPPORTED_SUFFIXES, load_gpen, load_gpen_file, read_state_dict
from .model import GPEN, estimate_forward_memory
from .runtime.fast_plan import FastOptions, FastPlan, resolve_plan
from .runtime.memory import model_bytes
from .state_dict import canonicalize_state_dict, check_state_dict, expected_shapes, infer_config

__all__ = [
    "GPEN",
    "GPENConfig",
    "FastOptions",
    "FastPlan",
    "resolve_plan",
    "RELEASED_CONFIGS",
    "GPENError",
    "CheckpointReadError",
    "NotAGPENCheckpoint",
    "ConfigError",
    "SUPPORTED_SUFFIXES",
    "read_state_dict",
    "canonicalize_state_dict",
    "infer_config",
    "expected_shapes",
    "check_state_dict",
    "load_gpen",
    "load_gpen_file",
    "estimate_forward_memory",
    "model_bytes",
]
