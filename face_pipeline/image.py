"""Turning whatever image a caller has into the pipeline's convention, and back.

The pipeline works on ``[B, 3, H, W]`` float32 RGB tensors in 0..1. ``to_rgb_float`` accepts numpy arrays or torch
tensors, ``HW`` (gray), ``HWC`` or ``BHWC`` (channels last, as ComfyUI and OpenCV hold them), 1, 2 (gray + alpha),
3 or 4 (RGBA) channels, and uint8, uint16 or float values, and rejects anything else with an ``InvalidImageError``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from .errors import InvalidImageError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MAX_SIDE = 16384
#: float inputs may overshoot 0..1 a little (resampling ringing); beyond this they are rejected as a wrong range
FLOAT_TOLERANCE = 0.05


def to_rgb_float(image, *, channels_last: bool = True) -> torch.Tensor:
    """Convert ``image`` to ``[B, 3, H, W]`` float32 RGB in 0..1 (on the tensor's device; numpy goes to the CPU).

    ``channels_last`` says how a 3-D/4-D input is laid out: ``[B, H, W, C]`` (default) or ``[B, C, H, W]``.
    """
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint16:
            tensor = torch.from_numpy(image.astype(np.float32) / 65535.0)
            integer_max = None
        else:
            tensor = torch.from_numpy(np.ascontiguousarray(image))
            integer_max = None
    elif isinstance(image, torch.Tensor):
        tensor = image
        integer_max = None
    else:
        raise InvalidImageError(f"expected an image as a numpy array or torch tensor, got {type(image).__name__}")

    if tensor.dtype == torch.uint8:
        integer_max = 255.0
    elif tensor.dtype in (torch.int16, torch.int32, torch.int64, torch.uint16):
        integer_max = 65535.0
    elif not tensor.is_floating_point():
        raise InvalidImageError(f"unsupported image dtype {tensor.dtype}")

    if tensor.dim() == 2:
        tensor = tensor[None, :, :, None] if channels_last else tensor[None, None]
    elif tensor.dim() == 3:
        tensor = tensor[None]
    elif tensor.dim() != 4:
        raise InvalidImageError(f"expected an image of 2, 3 or 4 dimensions ([B,] H, W[, C]), got shape {list(tensor.shape)}")
    if channels_last:
        tensor = tensor.permute(0, 3, 1, 2)  # [B, C, H, W]
    b, c, h, w = tensor.shape
    if b == 0 or h == 0 or w == 0:
        raise InvalidImageError(f"the image is empty: shape {list(tensor.shape)}")
    if c not in (1, 2, 3, 4):
        raise InvalidImageError(
            f"expected 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels, got {c} (shape {list(image.shape)})"
        )
    if max(h, w) > MAX_SIDE:
        raise InvalidImageError(f"image of {w}x{h} is larger than the supported {MAX_SIDE} pixels per side")

    tensor = tensor.float() if integer_max is None else tensor.float() / integer_max
    if c in (1, 2):
        tensor = tensor[:, :1].expand(b, 3, h, w)
    elif c == 4:
        tensor = tensor[:, :3]  # alpha is dropped; the caller keeps it if it needs it
    if integer_max is None:
        if not torch.isfinite(tensor).all():
            raise InvalidImageError("the image contains NaN or infinite values")
        low, high = tensor.min().item(), tensor.max().item()
        if low < -FLOAT_TOLERANCE or high > 1 + FLOAT_TOLERANCE:
            raise InvalidImageError(
                f"float images must hold values in 0..1; found {low:.3g}..{high:.3g} (was it 0..255 or -1..1?)"
            )
        tensor = tensor.clamp(0, 1)
    return tensor.contiguous()


def load_image(path: str | Path) -> torch.Tensor:
    """Read an image file (8- or 16-bit, gray, RGB or RGBA; any path, unicode included) as ``[1, 3, H, W]``."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise InvalidImageError(f"image not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)  # cv2.imread cannot open some unicode paths on Windows
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise InvalidImageError(f"{path.name} is not a readable image (corrupt or unsupported format)")
    if image.ndim == 3 and image.shape[2] == 3:
        image = image[:, :, ::-1]  # BGR -> RGB
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, [2, 1, 0, 3]]  # BGRA -> RGBA
    return to_rgb_float(np.ascontiguousarray(image))


def save_image(image: torch.Tensor, path: str | Path) -> None:
    """Write ``[1, 3, H, W]`` or ``[3, H, W]`` 0..1 RGB as an 8-bit file (the suffix picks the format)."""
    import cv2

    if image.dim() == 4:
        image = image[0]
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    ok, encoded = cv2.imencode(Path(path).suffix or ".png", np.ascontiguousarray(array[:, :, ::-1]))
    if not ok:
        raise InvalidImageError(f"could not encode an image as {Path(path).suffix}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    encoded.tofile(str(path))


def to_bgr_uint8(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` 0..1 RGB tensor -> ``[H, W, 3]`` uint8 BGR array (what OpenCV-based detectors take)."""
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(array[:, :, ::-1])
