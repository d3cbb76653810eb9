"""What the model is fed and how its output is used, per mode (the official GPEN scripts; docs/pipeline.md).

- ``restore`` (GPEN-BFR): the RGB crop; the output is the restored face.
- ``colorize`` (GPEN-Colorization-1024): the crop as 3-channel gray (BT.601 luma, as OpenCV's BGR2GRAY; the
  official demo reads the photo with IMREAD_COLOR, so a gray photo arrives as three equal channels). The input's
  luminance is kept and the model's colour taken, as the official ``face_colorization.post_process`` does in YUV
  (replacing Y while keeping U and V adds ``Y_in - Y_out`` to every RGB channel). The official script applies that
  only when its input was not already 1024 px; here the crop is always resampled from the photo, so the photo's
  luminance (its real detail) is always kept.
- ``inpaint`` (GPEN-Inpainting-1024): damaged pixels (mask = 1) are painted white before the forward, as the
  official demo's brush strokes (fill (255, 255, 255)) do; the model's output is the whole completed face, used as
  is, as in the official ``face_inpainting.py``.
All tensors ``[N, 3, S, S]`` float32 RGB in 0..1; masks ``[N, 1, S, S]`` in 0..1.
"""

from __future__ import annotations

import torch

RESTORE_MODES = ("restore", "colorize", "inpaint")

_LUMA = torch.tensor([0.299, 0.587, 0.114])


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` -> ``[N, 1, H, W]`` BT.601 luma."""
    return (rgb * _LUMA.to(rgb).reshape(1, 3, 1, 1)).sum(1, keepdim=True)


def to_gray3(rgb: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` -> gray repeated on 3 channels (BT.601 weights, as cv2.COLOR_BGR2GRAY)."""
    return luma(rgb).expand_as(rgb).contiguous()


def prepare_input(crops: torch.Tensor, mode: str, masks: torch.Tensor | None) -> torch.Tensor:
    if mode == "restore":
        return crops
    if mode == "colorize":
        return to_gray3(crops)
    if mode == "inpaint":
        return crops if masks is None else crops * (1 - masks) + masks  # damaged pixels painted white
    raise ValueError(f"unknown restore mode {mode!r}; choose one of {', '.join(RESTORE_MODES)}")


def finish_output(output: torch.Tensor, crops: torch.Tensor, mode: str, masks: torch.Tensor | None) -> torch.Tensor:
    if mode == "colorize":
        return (output + (luma(crops) - luma(output))).clamp_(0, 1)  # input's luminance, model's colour
    return output
