"""Restoration: aligned crops through a GPEN model, in memory-sized batches, with out-of-memory fallback."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import torch

from ..alignment import realign, warp_from_one_image
from ..errors import RestoreError, RestoreOutOfMemory
from ..types import FaceBatch
from .batching import auto_batch_size, is_out_of_memory, release_cached_memory
from .modes import RESTORE_MODES, finish_output, prepare_input

logger = logging.getLogger(__name__)


def model_size(model: torch.nn.Module) -> int:
    config = getattr(model, "config", None)
    size = getattr(config, "size", None)
    if not isinstance(size, int):
        raise RestoreError("the model does not say its input size (expected a GPEN model with .config.size)")
    return size


def _model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters(), None)
    if param is None:
        return torch.device("cpu"), torch.float32
    return param.device, param.dtype


def _masks_in_crop_space(batch: FaceBatch, masks: torch.Tensor) -> torch.Tensor:
    """Inpainting masks: ``[F, 1, S, S]`` already in crop space, or ``[B, 1, H, W]`` / ``[B, H, W]`` in image
    space (warped into each face's crop)."""
    if masks.dim() == 3:
        masks = masks[:, None]
    masks = masks.float()
    if masks.shape[0] == batch.num_faces and masks.shape[-1] == batch.size and masks.shape[-2] == batch.size:
        return masks.to(batch.crops.device)
    if masks.shape[0] != batch.num_images or tuple(masks.shape[-2:]) != batch.image_size:
        raise ValueError(
            f"inpainting masks must be [faces, 1, {batch.size}, {batch.size}] or [images, 1, H, W] matching the "
            f"{batch.num_images} images of {batch.image_size[1]}x{batch.image_size[0]}; got {list(masks.shape)}"
        )
    out = torch.zeros((batch.num_faces, 1, batch.size, batch.size), device=batch.crops.device)
    for i, face in enumerate(batch.faces):
        out[i] = warp_from_one_image(masks[face.image_index].to(batch.crops.device), batch.affines[i:i + 1],
                                     (batch.size, batch.size), interpolation="bilinear")[0]
    return out.clamp_(0, 1)


def restore_faces(
    model: torch.nn.Module,
    batch: FaceBatch,
    *,
    mode: str = "restore",
    strength: float = 1.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    batch_size: int | None = None,
    inpaint_masks: torch.Tensor | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    check_interrupt: Callable[[], None] | None = None,
) -> FaceBatch:
    """Restore every crop of ``batch`` with ``model``; returns the batch with ``restored`` ``[F, 3, S, S]`` (float32
    RGB 0..1, S the model's size; crops are re-made at S from the source images when the batch has another size).

    ``strength`` blends restored and original crops (1 = fully restored). ``batch_size`` None sizes batches from the
    memory estimate (``batching.py``). ``on_progress(done, total)`` runs after each batch, ``check_interrupt()``
    before each (it may raise to cancel). Out of memory: the batch is halved down to 1, then
    ``RestoreOutOfMemory``.
    """
    if mode not in RESTORE_MODES:
        raise ValueError(f"unknown restore mode {mode!r}; choose one of {', '.join(RESTORE_MODES)}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be between 0 and 1, got {strength}")
    size = model_size(model)
    if batch.size != size:
        batch = realign(batch, size=size)
    total = batch.num_faces
    model_device, model_dtype = _model_device_dtype(model)
    device = torch.device(device) if device is not None else model_device
    dtype = dtype or model_dtype
    masks = _masks_in_crop_space(batch, inpaint_masks) if mode == "inpaint" and inpaint_masks is not None else None
    if mode == "inpaint" and masks is None:
        raise ValueError("inpaint mode needs inpaint_masks marking the damaged region")
    restored = torch.empty((total, 3, size, size), dtype=torch.float32, device=batch.crops.device)
    if total == 0:
        return dataclasses.replace(batch, restored=restored)

    step = batch_size or auto_batch_size(model, size=size, dtype=dtype, device=device, faces=total)
    done = 0
    while done < total:
        if check_interrupt is not None:
            check_interrupt()
        stop = min(done + step, total)
        crops = batch.crops[done:stop]
        chunk_masks = masks[done:stop] if masks is not None else None
        try:
            with torch.no_grad():
                x = prepare_input(crops, mode, chunk_masks).to(device=device, dtype=dtype) * 2 - 1
                out = model(x)
                out = (out.float() * 0.5 + 0.5).clamp_(0, 1).to(restored.device)
                del x
        except Exception as exc:  # only out-of-memory is handled here; anything else propagates unchanged
            if not is_out_of_memory(exc):
                raise
            release_cached_memory(device)
            if step == 1:
                raise RestoreOutOfMemory(
                    f"not even one {size}x{size} face fits in memory on {device} in {dtype}. Try fp16/bf16, free "
                    f"memory (other models, a smaller batch of images), or run on another device."
                ) from exc
            step = max(1, step // 2)
            logger.warning("out of memory restoring %d faces at once; retrying with %d", stop - done, step)
            continue
        if not torch.isfinite(out).all():
            raise RestoreError(f"the model produced NaN/inf for faces {done}..{stop - 1} in {dtype}; try fp32 or bf16")
        out = finish_output(out, crops, mode, chunk_masks)
        if strength < 1.0:
            out = torch.lerp(crops.float(), out, strength)
        restored[done:stop] = out
        done = stop
        if on_progress is not None:
            on_progress(done, total)
    return dataclasses.replace(batch, restored=restored)


__all__ = ["RESTORE_MODES", "restore_faces", "model_size", "RestoreOutOfMemory", "RestoreError"]
