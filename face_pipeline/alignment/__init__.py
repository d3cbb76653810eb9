"""Alignment: five landmarks -> a similarity transform onto a template -> square crops at the model's size."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..types import DetectedFace, FaceBatch
from .templates import TEMPLATES, template_points
from .transform import invert_affine, similarity_transform
from .warp import warp_from_one_image, warp_images


def estimate_alignment(face: DetectedFace, *, size: int, template: str = "gpen") -> tuple[np.ndarray, np.ndarray]:
    """(image -> crop, crop -> image) ``[2, 3]`` float64 matrices for ``face`` at crop side ``size``."""
    forward = similarity_transform(face.landmarks_array(), template_points(template, size))
    return forward, invert_affine(forward)


def _crops(images: torch.Tensor, faces: Sequence[DetectedFace], affines: torch.Tensor, size: int) -> torch.Tensor:
    crops = torch.empty((len(faces), images.shape[1], size, size), dtype=torch.float32, device=images.device)
    for index in sorted({f.image_index for f in faces}):
        members = [i for i, f in enumerate(faces) if f.image_index == index]
        warped = warp_from_one_image(images[index].float(), affines[members].to(images.device), (size, size))
        crops[members] = warped.clamp_(0, 1)  # bicubic overshoots a little
    return crops


def align_faces(
    images: torch.Tensor, faces: Sequence[DetectedFace], *, size: int, template: str = "gpen"
) -> FaceBatch:
    """Crop every face of ``faces`` out of ``images`` ``[B, 3, H, W]`` (0..1 RGB) as a ``size`` x ``size`` aligned
    crop, on the images' device. Faces keep their order; ``image_index`` says which image each comes from."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown alignment template {template!r}; choose one of {', '.join(TEMPLATES)}")
    for face in faces:
        if not 0 <= face.image_index < images.shape[0]:
            raise ValueError(f"a face refers to image {face.image_index}, but the batch has {images.shape[0]} images")
    pairs = [estimate_alignment(face, size=size, template=template) for face in faces]
    affines = torch.tensor(np.array([p[0] for p in pairs]).reshape(-1, 2, 3), dtype=torch.float64)
    inverses = torch.tensor(np.array([p[1] for p in pairs]).reshape(-1, 2, 3), dtype=torch.float64)
    crops = _crops(images, faces, affines, size) if faces else images.new_zeros((0, 3, size, size))
    return FaceBatch(images=images, faces=tuple(faces), crops=crops, affines=affines, inverse_affines=inverses,
                     size=size, template=template)


def realign(batch: FaceBatch, *, size: int) -> FaceBatch:
    """The same faces cropped again from the source images at another side ``size`` (matrices rescaled)."""
    if size == batch.size:
        return batch
    factor = size / batch.size
    affines = batch.affines * factor  # crop coordinates scale with the crop
    inverses = torch.tensor(np.array([invert_affine(a) for a in affines.numpy()]).reshape(-1, 2, 3),
                            dtype=torch.float64)
    crops = _crops(batch.images, batch.faces, affines, size) if batch.faces else batch.crops.new_zeros(
        (0, 3, size, size))
    return FaceBatch(images=batch.images, faces=batch.faces, crops=crops, affines=affines, inverse_affines=inverses,
                     size=size, template=batch.template, extra=dict(batch.extra))


__all__ = ["TEMPLATES", "template_points", "similarity_transform", "invert_affine", "estimate_alignment",
           "warp_images", "warp_from_one_image", "align_faces", "realign"]
