"""How the inference forward runs: the user's intent (:class:`FastOptions`) resolved once per device and dtype into
the decisions the forward reads (:class:`FastPlan`).

``FastOptions`` is what a caller sets on a model (``model.fast_options``); None means "auto", decided here and only
here. ``resolve_plan`` is a pure function of the options, the configuration, the device type and the dtype, cached,
so a forward costs one dictionary look-up to know what to do, and the forward and everything below it read plain
booleans. Adding an option means a field in ``FastOptions`` and its use: its decision in ``FastPlan`` (with its auto
rule in ``resolve_plan``) and the code that reads it.

The auto rules (why: see the README's benchmark table):

- ``fold_blur``: fold the FIR blurs into the neighbouring stride-2 convolutions on CUDA (tensor cores make the extra
  multiply-adds cheaper than a thin depthwise pass; on CPUs they are not);
- ``subpixel_upsample``: the upsampling convolutions as four-phase 3x3 convolutions wherever the blurs are folded
  (the sub-pixel form is the folded convolution rearranged);
- ``fused_kernels``: the Triton epilogue on CUDA, for the dtypes it takes (float32, float16, bfloat16);
- ``cudnn_benchmark``: cuDNN autotuning during this model's forward on CUDA (never elsewhere);
- ``cuda_graphs``: off unless asked, and only ever on CUDA;
- ``banded``: the largest layers in strips on the CPU from 512 up (``bands.uses_bands``);
- ``winograd``: large 3x3 convolutions by Winograd's F(4x4, 3x3) on the CPU in float32 (``ops/winograd.py``: a
  quarter of the multiplications, where oneDNN's direct convolution is compute-bound; GPUs and half precision keep
  cuDNN's choice);
- ``per_face``: a batch runs face by face on the CPU (the per-face weight path beats the shared-weight batch path
  there and needs a fraction of the memory); in one batch elsewhere.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch

from ..config import GPENConfig
from .bands import uses_bands

#: Dtypes the fused Triton epilogue takes (``ops/triton_epilogue.py``).
FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class FastOptions:
    """What the caller wants from the inference forward; None = decide per device (see the module doc).

    ``use_fast_path``: False runs the literal reference forward (the layers' own ``forward``), as with gradients on.
    ``channels_last``: keep the fast path's activations channels-last (oneDNN and cuDNN prefer it).
    ``fold_blur``, ``subpixel_upsample``, ``fused_kernels``, ``cudnn_benchmark``, ``banded``, ``winograd``,
    ``per_face``: None = auto.
    ``cuda_graphs``: replay CUDA forwards through a captured graph (``cuda_graph.py``); it keeps one forward's
    activations allocated while the model lives.
    """

    use_fast_path: bool = True
    channels_last: bool = True
    fold_blur: bool | None = None
    subpixel_upsample: bool | None = None
    fused_kernels: bool | None = None
    cudnn_benchmark: bool | None = None
    cuda_graphs: bool = False
    banded: bool | None = None
    winograd: bool | None = None
    per_face: bool | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            allowed = (True, False) if field.type == "bool" else (True, False, None)
            if value not in allowed or not (value is None or isinstance(value, bool)):
                raise ValueError(f"FastOptions.{field.name} must be one of {allowed}, got {value!r}")

    def replace(self, **changes) -> FastOptions:
        """A copy with ``changes`` (field names of this class)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class FastPlan:
    """The decisions one forward runs from, all plain booleans (hashable: the CUDA graph keys on it).

    ``fast``: run ``fast_forward`` (else the reference forward); ``channels_last``: activations channels-last;
    ``fold_blur``: the encoder's and decoder's blurs folded into their convolutions; ``subpixel``: upsampling
    convolutions in sub-pixel form; ``fused_kernels``: ask for the Triton epilogue; ``cudnn_benchmark``: turn cuDNN
    autotuning on for the forward; ``cuda_graphs``: replay through a captured graph; ``banded``: the largest layers
    in strips; ``winograd``: large 3x3 convolutions by Winograd's F(4x4, 3x3); ``per_face``: split a batch into
    single faces.
    """

    fast: bool = True
    channels_last: bool = True
    fold_blur: bool = False
    subpixel: bool = False
    fused_kernels: bool = False
    cudnn_benchmark: bool = False
    cuda_graphs: bool = False
    banded: bool = False
    winograd: bool = False
    per_face: bool = False

    def replace(self, **changes) -> FastPlan:
        """A copy with ``changes`` (field names of this class): a plan forced for a test or a benchmark."""
        return dataclasses.replace(self, **changes)


def _device_type(device: torch.device | str) -> str:
    return torch.device(device).type


def resolve_plan(options: FastOptions, config: GPENConfig, device: torch.device | str,
                 dtype: torch.dtype) -> FastPlan:
    """The plan for a model of ``config`` in ``dtype`` on ``device`` (see the module doc for the auto rules)."""
    return _resolve(options, config, _device_type(device), dtype)


@functools.lru_cache(maxsize=256)
def _resolve(options: FastOptions, config: GPENConfig, device_type: str, dtype: torch.dtype) -> FastPlan:
    cuda = device_type == "cuda"

    def auto(setting: bool | None, default: bool) -> bool:
        return default if setting is None else setting

    fold = auto(options.fold_blur, cuda)
    return FastPlan(
        fast=options.use_fast_path,
        channels_last=options.channels_last,
        fold_blur=fold,
        subpixel=auto(options.subpixel_upsample, fold),
        fused_kernels=auto(options.fused_kernels, cuda and dtype in FUSED_DTYPES),
        cudnn_benchmark=cuda and auto(options.cudnn_benchmark, True),
        cuda_graphs=cuda and options.cuda_graphs,
        banded=auto(options.banded, uses_bands(config, device_type)),
        winograd=auto(options.winograd, device_type == "cpu" and dtype == torch.float32),
        per_face=auto(options.per_face, device_type == "cpu"),
    )
