"""Turning whatever image a caller has into the pipeline's convention, and back; image files in and out.

The pipeline works on ``[B, 3, H, W]`` float32 RGB tensors in 0..1. ``to_rgb_float`` accepts numpy arrays or torch
tensors laid out ``HW`` (gray), ``HWC`` or ``BHWC`` (channels last, as ComfyUI and OpenCV hold them; or channels first
with ``channels_last=False``), with 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) channels; values uint8 (/255),
uint16 (/65535) or float in 0..1. Alpha is dropped. Float values a little outside 0..1 (up to ``FLOAT_TOLERANCE``,
e.g. resampling ringing) are clamped; anything else (NaN/inf, 0..255 floats, -1..1, empty or oversized images, other
dtypes) is an ``InvalidImageError`` that says what was found.

Files go through OpenCV's codecs from bytes (``np.fromfile`` / ``tofile``), so paths with any characters work on
every OS. 8- and 16-bit files are read (EXIF orientation applied); files are always written as 8-bit (16-bit in, 8-bit
out), rounded, JPEG at quality 95.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from .errors import InvalidImageError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: the longest side accepted (an 8K frame is 7680; 16K is the most a paste at 2x of an 8K frame gives)
MAX_SIDE = 16384
#: float inputs may overshoot 0..1 by this much (resampling ringing) and are clamped; beyond it they are rejected
FLOAT_TOLERANCE = 0.05
JPEG_QUALITY = 95

_INTEGER_MAX = {torch.uint8: 255.0, torch.uint16: 65535.0}


def _as_tensor(image) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint16:  # torch's uint16 is limited; convert here
            return torch.from_numpy(image.astype(np.float32) / 65535.0)
        if image.dtype not in (np.uint8, np.float16, np.float32, np.float64):
            raise InvalidImageError(f"unsupported image dtype {image.dtype}: expected uint8, uint16 or float in 0..1")
        image = torch.from_numpy(np.ascontiguousarray(image))
    if isinstance(image, torch.Tensor):
        if image.dtype in _INTEGER_MAX:
            return image.float() / _INTEGER_MAX[image.dtype]
        if not image.is_floating_point():
            raise InvalidImageError(f"unsupported image dtype {image.dtype}: expected uint8, uint16 or float in 0..1")
        return image
    raise InvalidImageError(f"expected an image as a numpy array or torch tensor, got {type(image).__name__}")


def to_rgb_float(image, *, channels_last: bool = True) -> torch.Tensor:
    """Convert ``image`` (see the module doc) to ``[B, 3, H, W]`` float32 RGB in 0..1, on the tensor's device (numpy
    goes to the CPU). ``channels_last`` says how 3-D/4-D input is laid out: ``[B, H, W, C]`` (default) or
    ``[B, C, H, W]``; a 2-D input is one gray image."""
    was_integer = (isinstance(image, np.ndarray) and image.dtype in (np.uint8, np.uint16)) or (
        isinstance(image, torch.Tensor) and image.dtype in _INTEGER_MAX)
    shape = list(image.shape) if hasattr(image, "shape") else None
    tensor = _as_tensor(image)
    if tensor.dim() == 2:
        tensor = tensor[None, :, :, None] if channels_last else tensor[None, None]
    elif tensor.dim() == 3:
        tensor = tensor[None]
    elif tensor.dim() != 4:
        raise InvalidImageError(f"expected an image of 2, 3 or 4 dimensions ([B,] H, W[, C]), got shape {shape}")
    if channels_last:
        tensor = tensor.permute(0, 3, 1, 2)  # [B, H, W, C] -> [B, C, H, W]
    b, c, h, w = tensor.shape
    if b == 0 or h == 0 or w == 0:
        raise InvalidImageError(f"the image is empty: shape {shape}")
    if c not in (1, 2, 3, 4):
        layout = "[B, H, W, C]" if channels_last else "[B, C, H, W]"
        raise InvalidImageError(f"expected 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels in {layout}, got "
                                f"{c} (shape {shape})")
    if max(h, w) > MAX_SIDE:
        raise InvalidImageError(f"image of {w}x{h} is larger than the supported {MAX_SIDE} pixels per side")
    tensor = tensor.float()
    tensor = tensor[:, :1].expand(b, 3, h, w) if c in (1, 2) else tensor[:, :3]  # gray -> RGB; alpha dropped
    if not was_integer:
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
    """Read an image file (8- or 16-bit, gray, RGB or RGBA; any path, unicode included) as ``[1, 3, H, W]`` float32
    RGB 0..1 on the CPU."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise InvalidImageError(f"image not found: {path}")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)  # cv2.imread cannot open some unicode paths on Windows
        # ANYCOLOR|ANYDEPTH: gray or BGR, 8 or 16 bit, EXIF orientation applied (UNCHANGED would skip it); alpha,
        # which the pipeline drops anyway, is not decoded
        image = cv2.imdecode(data, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH) if data.size else None
    except (OSError, cv2.error) as exc:
        raise InvalidImageError(f"{path.name} could not be read: {exc}") from exc
    if image is None:
        raise InvalidImageError(f"{path.name} is not a readable image (empty, corrupt or an unsupported format)")
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        raise InvalidImageError(f"{path.name}: {image.dtype} pixels are not supported (expected 8 or 16 bit)")
    if image.ndim == 3 and image.shape[2] == 3:
        image = image[:, :, ::-1]  # BGR -> RGB
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, [2, 1, 0, 3]]  # BGRA -> RGBA
    return to_rgb_float(np.ascontiguousarray(image))


def to_bgr_uint8(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` 0..1 RGB tensor -> ``[H, W, 3]`` uint8 BGR array, rounded (OpenCV's layout)."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise InvalidImageError(f"expected one RGB image [3, H, W], got {list(image.shape)}")
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(array[:, :, ::-1])


def save_image(image: torch.Tensor, path: str | Path) -> None:
    """Write ``[1, 3, H, W]`` or ``[3, H, W]`` RGB 0..1 as an 8-bit file; the suffix picks the format (one of
    ``IMAGE_SUFFIXES``). The folder is created if needed."""
    import cv2

    path = Path(path)
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InvalidImageError(f"cannot save {path.name}: the suffix must be one of {', '.join(IMAGE_SUFFIXES)}")
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if suffix in (".jpg", ".jpeg") else []
    try:
        ok, encoded = cv2.imencode(suffix, to_bgr_uint8(image), params)
    except cv2.error as exc:
        raise InvalidImageError(f"could not encode {path.name}: {exc}") from exc
    if not ok:
        raise InvalidImageError(f"could not encode {path.name} as {suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded.tofile(str(path))
