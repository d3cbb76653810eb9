"""The official GPEN paste mask's post-processing (``mask_postprocess`` of yangxy/GPEN ``face_enhancement.py``), and
the mask it gives where every pixel is face (``rect_official``), and its small-face blur.

Official: the 0/1 parse map at 512 (float64) gets its outer 26 rows and columns cleared, then two Gaussian blurs of
kernel 101 and sigma 4 (OpenCV ``GaussianBlur``, border REFLECT_101), then float32. Here the same in float64 with
one separable kernel (the OpenCV kernel: ``exp(-d^2 / (2 sigma^2))`` normalised to sum 1) and reflect padding
(PyTorch's ``reflect`` is OpenCV's REFLECT_101); a map of another side ``s`` scales the border, kernel and sigma by
``s / 512``. Measured against the official masks of the pipeline vectors (tests/data/gpen/pipeline, MANIFEST): exact
to float32 rounding (tests/test_official_parity.py holds it to 2e-6, and to ``cv2.GaussianBlur`` itself).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

OFFICIAL_BORDER, OFFICIAL_KERNEL, OFFICIAL_SIGMA = 26, 101, 4.0  # at a 512 map


def _kernel(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    taps = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-(taps ** 2) / (2 * sigma ** 2))
    return (kernel / kernel.sum()).to(device=device, dtype=dtype)


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable blur of ``[N, 1, s, s]`` with REFLECT_101 borders (rows, then columns)."""
    r = (kernel.numel() - 1) // 2
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), kernel.reshape(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), kernel.reshape(1, 1, -1, 1))


def official_mask_postprocess(face: torch.Tensor) -> torch.Tensor:
    """``face`` ``[N, 1, s, s]`` 0..1 (1 = face class) -> ``[N, 1, s, s]`` float32 0..1, the official mask (see the
    module doc). Runs in float64 (float32 on devices without it, e.g. MPS: within 1e-6)."""
    if face.dim() != 4 or face.shape[1] != 1 or face.shape[-1] != face.shape[-2]:
        raise ValueError(f"face maps must be [N, 1, s, s], got {list(face.shape)}")
    side = face.shape[-1]
    dtype = torch.float32 if face.device.type == "mps" else torch.float64
    m = face.to(dtype).clone()
    border = round(OFFICIAL_BORDER * side / 512)
    m[..., :border, :] = 0
    m[..., -border:, :] = 0
    m[..., :, :border] = 0
    m[..., :, -border:] = 0
    size = max(3, round(OFFICIAL_KERNEL * side / 512) // 2 * 2 + 1)
    size = min(size, 2 * side - 1 if (2 * side - 1) % 2 else 2 * side - 3)  # reflect padding needs r < side
    kernel = _kernel(size, OFFICIAL_SIGMA * side / 512, face.device, dtype)
    return _blur(_blur(m, kernel), kernel).float().clamp_(0, 1)


@functools.lru_cache(maxsize=4)
def _rect(side: int, device: str) -> torch.Tensor:
    return official_mask_postprocess(torch.ones((1, 1, side, side), device=torch.device(device)))


def official_rect_mask(side: int = 512, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[1, 1, side, side]``: the official post-processing of an all-face parse (computed once per side and
    device)."""
    return _rect(int(side), str(torch.device(device))).clone()


def small_face_blur(faces: torch.Tensor, *, rounded: bool = False) -> torch.Tensor:
    """The official small-face blur: ``faces`` ``[F, 3, S, S]`` 0..1 filtered by ``[[1, 2, 1], [2, 4, 2], [1, 2, 1]] /
    16`` (``cv2.filter2D``, border REFLECT_101); ``rounded``: the result on 8-bit levels (half to even), as the
    official uint8 filter gives it (exact for 8-bit input: the sums are multiples of 1/16 of a level)."""
    dtype = torch.float32 if faces.device.type == "mps" else torch.float64
    kernel = torch.tensor([1.0, 2.0, 1.0], device=faces.device, dtype=dtype) / 4
    x = (faces.to(dtype) * 255).round_() if rounded else faces.to(dtype)  # 8-bit levels exactly: ties round alike
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    channels = x.shape[1]
    x = F.conv2d(x, kernel.reshape(1, 1, 1, 3).expand(channels, 1, 1, 3), groups=channels)
    x = F.conv2d(x, kernel.reshape(1, 1, 3, 1).expand(channels, 1, 3, 1), groups=channels)
    return (x.round() / 255 if rounded else x).to(faces.dtype).clamp_(0, 1)
