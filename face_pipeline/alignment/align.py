"""Aligned square crops of detected faces: landmarks -> similarity onto a template -> batched warp.

Crops are ``[F, 3, S, S]`` float32 RGB 0..1 on the images' device; each image is sampled once for all of its faces
(the K grids side by side, as ``warp_from_one_image``), so many faces on a large frame never copy the frame per face.
The matrices are computed on the host (float64) and reach the device in one copy for the whole batch: no host sync
per image or per face.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..types import DetectedFace, FaceBatch
from .templates import TEMPLATES, template_points
from .transform import invert_affine, similarity_transform
from .warp import INTERPOLATIONS, sampling_thetas, warp_images

MIN_SIZE, MAX_SIZE = 16, 4096
CROP_INTERPOLATIONS = ("bicubic", "bilinear")  # ``AlignOptions.crop_interpolation``


def round_to_8bit(images: torch.Tensor) -> torch.Tensor:
    """``images`` (0..1) rounded to the nearest of the 256 levels of an 8-bit image (half to even, as OpenCV's
    saturate_cast), in place; float32 0..1 still."""
    return images.mul_(255).round_().div_(255)


def estimate_alignment(face: DetectedFace, *, size: int, template: str = "gpen",
                       precision: str = "float64") -> tuple[np.ndarray, np.ndarray]:
    """(image -> crop, crop -> image) ``[2, 3]`` float64 matrices for ``face`` at crop side ``size``; ``precision``:
    of the fit (``transform.similarity_transform``)."""
    forward = similarity_transform(face.landmarks_array(), template_points(template, size), precision=precision)
    return forward, invert_affine(forward)


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"crop size must be an integer from {MIN_SIZE} to {MAX_SIZE} pixels, got {size!r}")


def crop_faces(images: torch.Tensor, faces: Sequence[DetectedFace], affines: torch.Tensor, size: int, *,
               interpolation: str = "bicubic", rounded: bool = False) -> torch.Tensor:
    """``[F, 3, size, size]`` crops of ``images`` ``[B, 3, H, W]`` by ``affines`` ``[F, 2, 3]`` (image -> crop),
    grouped by ``image_index`` so each image is sampled once; clamped to 0..1 (bicubic overshoots a little).
    ``rounded``: rounded to 8-bit levels (``round_to_8bit``), as the official code's uint8 crops, and sampled in
    float64 where the device has it (float32 sampling coordinates would round a few more pixels the other way)."""
    precise = rounded and images.device.type != "mps"
    crops = _crop_faces(images, faces, affines, size, interpolation=interpolation, precise=precise)
    return round_to_8bit(crops) if rounded else crops


def _crop_faces(images: torch.Tensor, faces: Sequence[DetectedFace], affines: torch.Tensor, size: int, *,
                interpolation: str, precise: bool = False) -> torch.Tensor:
    if len(faces) > 1 and [f.image_index for f in faces] == list(range(images.shape[0])) and not precise:
        # one face per image, in image order (a video with one face per frame): one batched warp of the images
        # as they are, no per-image launches or index copies; grid_sample samples each pair alone, as below
        return warp_images(images, affines, (size, size), interpolation=interpolation).float().clamp_(0, 1)
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose one of {', '.join(INTERPOLATIONS)}")
    if not faces:
        return torch.empty((0, images.shape[1], size, size), dtype=torch.float32, device=images.device)
    order = sorted(range(len(faces)), key=lambda i: faces[i].image_index)  # faces grouped by image, stable
    matrices = affines.detach().cpu().double() if isinstance(affines, torch.Tensor) else affines  # host already
    thetas = sampling_thetas(np.asarray(matrices, np.float64)[order], in_size=(images.shape[-2], images.shape[-1]),
                             out_size=(size, size))  # [F, 2, 3] float64, host
    dtype = images.dtype if images.dtype in (torch.float16, torch.bfloat16, torch.float64) else torch.float32
    dtype = torch.float64 if precise else dtype
    theta = torch.as_tensor(thetas, dtype=torch.float64 if precise else torch.float32).to(images.device)  # one copy
    pieces, start = [], 0
    for index in sorted({f.image_index for f in faces}):
        count = sum(1 for f in faces if f.image_index == index)
        grid = F.affine_grid(theta[start:start + count], [count, 1, size, size], align_corners=False)  # [K, S, S, 2]
        grid = grid.permute(1, 0, 2, 3).reshape(1, size, count * size, 2)  # the K grids side by side
        out = F.grid_sample(images[index][None].to(dtype), grid.to(dtype), mode=interpolation, padding_mode="zeros",
                            align_corners=False)  # [1, C, S, K*S]
        pieces.append(out.reshape(images.shape[1], size, count, size).permute(2, 0, 1, 3))  # [K, C, S, S]
        start += count
    grouped = torch.cat(pieces).float().clamp_(0, 1)  # [F, C, S, S] in grouped order
    if order == list(range(len(faces))):
        return grouped
    position = {face: slot for slot, face in enumerate(order)}
    return torch.stack([grouped[position[i]] for i in range(len(faces))])  # views of the device tensor: no copy in


def face_affines(faces: Sequence[DetectedFace], *, size: int, template: str = "gpen",
                 precision: str = "float64") -> tuple[torch.Tensor, torch.Tensor]:
    """The matrices ``align_faces`` uses, without cutting the crops: (image -> crop, crop -> image), each
    ``[F, 2, 3]`` float64 on the CPU; ``precision``: of the fit."""
    pairs = [estimate_alignment(face, size=size, template=template, precision=precision) for face in faces]
    affines = torch.tensor(np.array([p[0] for p in pairs]).reshape(-1, 2, 3), dtype=torch.float64)
    inverses = torch.tensor(np.array([p[1] for p in pairs]).reshape(-1, 2, 3), dtype=torch.float64)
    return affines, inverses


def align_faces(
    images: torch.Tensor, faces: Sequence[DetectedFace], *, size: int, template: str = "gpen",
    interpolation: str = "bicubic", rounded: bool = False, precision: str = "float64",
) -> FaceBatch:
    """Cut every face of ``faces`` out of ``images`` ``[B, 3, H, W]`` (float RGB 0..1, any device) as an aligned
    ``size`` x ``size`` crop (``size`` 16..4096; GPEN models use 256..2048).

    Faces keep their order; ``face.image_index`` says which image each comes from. The batch holds crops
    ``[F, 3, S, S]`` float32, ``affines`` (image -> crop) and ``inverse_affines`` (crop -> image, the exact
    inverse), both ``[F, 2, 3]`` float64 on the CPU. ``interpolation="bilinear"`` with ``rounded`` reproduces the
    crops the official GPEN code writes (its ``flags=3`` is INTER_AREA, which ``warpAffine`` runs as bilinear, on
    uint8: rounded to 8-bit levels); ``precision="float32"`` fits the matrices in float32 as it does.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {list(images.shape)}")
    if template not in TEMPLATES:
        raise ValueError(f"unknown alignment template {template!r}; choose one of {', '.join(TEMPLATES)}")
    _check_size(size)
    for face in faces:
        if not 0 <= face.image_index < images.shape[0]:
            raise ValueError(f"a face refers to image {face.image_index}, but the batch has {images.shape[0]} images")
    affines, inverses = face_affines(faces, size=size, template=template, precision=precision)
    crops = crop_faces(images, faces, affines, size, interpolation=interpolation, rounded=rounded)
    return FaceBatch(images=images, faces=tuple(faces), crops=crops, affines=affines, inverse_affines=inverses,
                     size=size, template=template)


def realign(batch: FaceBatch, *, size: int, interpolation: str = "bicubic") -> FaceBatch:
    """The same faces cut again from ``batch.images`` at side ``size`` (never by resizing the old crops).

    The templates scale linearly with the crop side (``ref_S = ref_1 * S``, as the official code builds them), so
    the matrices scale by ``size / batch.size`` and the result equals ``align_faces`` at ``size``. A restored crop
    is dropped (it belongs to the old size).
    """
    _check_size(size)
    if size == batch.size:
        return batch
    factor = size / batch.size
    affines = batch.affines * factor
    inverses = batch.inverse_affines.clone()
    inverses[:, :, :2] /= factor  # crop -> image: crop coordinates shrink back by the factor
    crops = crop_faces(batch.images, batch.faces, affines, size, interpolation=interpolation)
    return FaceBatch(images=batch.images, faces=batch.faces, crops=crops, affines=affines, inverse_affines=inverses,
                     size=size, template=batch.template)
