"""Precision names and the one "auto" rule, shared by the CLI, the ComfyUI nodes and the benchmarks.

``auto`` picks float16 where the device runs it well, else bfloat16 where that is supported, else float32. Which
devices that is, is the caller's knowledge when it has any (ComfyUI's ``should_use_fp16`` / ``should_use_bf16``);
without it, float16 on CUDA and MPS and float32 everywhere else.
"""

from __future__ import annotations

import torch

#: Precision names as users type them, and their dtypes.
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

#: Every precision a user may choose: ``auto`` and the names of :data:`DTYPES`.
PRECISIONS: tuple[str, ...] = ("auto", *DTYPES)


def choose_dtype(precision: str, device: torch.device | str, *, fp16: bool | None = None,
                 bf16: bool | None = None) -> torch.dtype:
    """The dtype for ``precision`` (one of :data:`PRECISIONS`) on ``device``.

    ``fp16`` / ``bf16``: whether the device runs that precision well, when the caller knows (None: float16 on
    CUDA and MPS, no bfloat16 preference elsewhere)."""
    if precision != "auto":
        if precision not in DTYPES:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        return DTYPES[precision]
    if fp16 is None:
        fp16 = torch.device(device).type in ("cuda", "mps")
    if fp16:
        return torch.float16
    if bf16:
        return torch.bfloat16
    return torch.float32
