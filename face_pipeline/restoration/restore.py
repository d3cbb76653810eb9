"""``restore_faces``: aligned crops through a GPEN model in memory-sized batches, with out-of-memory fallback.

Pre- and post-processing are the official FaceGAN's (docs/pipeline.md, Restoration) in float: RGB crop in 0..1
-> ``(x - 0.5) / 0.5`` -> model -> ``y * 0.5 + 0.5`` clamped to 0..1. The official pipeline then truncates to uint8;
here the result stays float32 so paste-back and ComfyUI keep the precision (quantise only when saving a file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable

import torch

from ..alignment import realign
from ..errors import RestoreError, RestoreOutOfMemory
from ..memory import DEFAULT_MEMORY, MemoryPolicy
from ..protocols import RestorationModel
from ..types import FaceBatch
from .batching import auto_batch_size
from .masks import masks_in_crop_space
from .modes import finish_output, prepare_input
from .options import RestoreOptions

logger = logging.getLogger(__name__)


def model_size(model: RestorationModel) -> int:
    """The crop side the model takes (``model.config.size``)."""
    size = getattr(getattr(model, "config", None), "size", None)
    if not isinstance(size, int) or size <= 0:
        raise RestoreError(f"the model does not say its input size: expected a GPEN model with .config.size, got "
                           f"{type(model).__name__}")
    return size


def model_device_dtype(model: RestorationModel) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of the model's first parameter (CPU float32 for a model without parameters)."""
    param = next(model.parameters(), None)
    if param is None:
        return torch.device("cpu"), torch.float32
    return param.device, param.dtype


def _forward(model: RestorationModel, crops: torch.Tensor, *, device: torch.device, dtype: torch.dtype,
             check_interrupt: Callable[[], None] | None = None) -> torch.Tensor:
    """``[n, 3, S, S]`` 0..1 (any device) -> ``[n, 3, S, S]`` float32 0..1 on ``crops.device``. ``check_interrupt``
    also runs between the network's blocks when the model offers it (``gpen_arch``'s ``GPEN.between_blocks``)."""
    between_blocks = getattr(model, "between_blocks", None)  # duck-typed: other models are checked between faces
    hooked = between_blocks(check_interrupt) if between_blocks is not None else contextlib.nullcontext()
    with torch.no_grad(), hooked:
        x = crops.to(device=device, dtype=torch.float32).sub(0.5).div(0.5).to(dtype)  # RGB in [-1, 1], as FaceGAN
        out = model(x)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(x.shape):
            found = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise RestoreError(f"the model returned {found}, expected {list(x.shape)} (an image per input face)")
        del x
        return out.float().mul(0.5).add(0.5).clamp_(0, 1).to(crops.device)


def restore_faces(
    model: RestorationModel,
    batch: FaceBatch,
    *,
    options: RestoreOptions = RestoreOptions(),
    inpaint_masks: torch.Tensor | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    check_interrupt: Callable[[], None] | None = None,
    memory: MemoryPolicy = DEFAULT_MEMORY,
) -> FaceBatch:
    """Restore every crop of ``batch`` with ``model`` (``protocols.RestorationModel``: a GPEN); returns a copy with
    ``restored`` ``[F, 3, S, S]`` float32 RGB 0..1 on the crops' device, S the model's size (``model.config.size``).
    When ``batch.size != S`` the crops are re-made at S from the source images first (``alignment.realign``), so the
    returned batch has ``size == S``.

    The forward runs where the model is, in its precision (the caller, e.g. ComfyUI, owns where the model lives).
    ``options`` (``RestoreOptions``, validated when built):

    - ``mode``: ``restore`` (GPEN-BFR), ``colorize`` (GPEN-Colorization: gray in, input luminance kept) or
      ``inpaint`` (GPEN-Inpainting: ``inpaint_masks`` image-space ``[B, H, W]`` / ``[B, 1, H, W]``, 1 = damaged,
      see ``masks.py``; an all-zero mask feeds the crops as they are, for images whose damage is already white, as
      the official demo does). See ``modes.py`` for what each feeds the model.
    - ``strength`` in 0..1 blends restored (1) with the original crop (0); at 0 the model is not run.
    - ``truncate_restored``: the model's output truncated to 8-bit levels as the official code's (and a blend of
      strength < 1 rounded to them, as its ``cv2.addWeighted``).
    - ``batch_size``: faces per forward; None sizes it from free memory and ``model.estimate_memory``, at most
      ``batching.faces_per_step`` faces (one on the CPU). On out-of-memory the batch is halved and retried down to
      1 face; if one face does not fit, ``RestoreOutOfMemory``.
    - ``on_progress(done, total)`` after each forward; ``check_interrupt()`` before each (it may raise to cancel)
      and, for a GPEN (``model.between_blocks``), between the network's blocks inside it.
    - ``memory``: where free memory, out-of-memory errors and cache release are decided (``face_pipeline/memory.py``;
      ComfyUI passes its own).
    """
    if not isinstance(options, RestoreOptions):
        raise TypeError(f"options must be a RestoreOptions, got {type(options).__name__}")
    mode, strength = options.mode, options.strength
    if mode == "inpaint" and inpaint_masks is None:
        raise ValueError("inpaint mode needs inpaint_masks marking the damaged region (1 = damaged); for an image "
                         "whose damage is already painted white, pass an all-zero mask")
    size = model_size(model)
    if batch.size != size:
        logger.debug("re-cropping %d faces at %d for the model (were %d)", batch.num_faces, size, batch.size)
        batch = realign(batch, size=size)
    total = batch.num_faces
    # (inpaint without masks was refused above)
    masks = masks_in_crop_space(batch, inpaint_masks) if mode == "inpaint" and inpaint_masks is not None else None
    if total == 0:
        return dataclasses.replace(batch, restored=batch.crops.new_zeros((0, 3, size, size), dtype=torch.float32),
                                   restore_mode=mode, color_reference=None)
    if strength == 0.0:
        logger.info("strength 0: the %d faces keep their original crops (model not run)", total)
        if on_progress is not None:
            on_progress(total, total)
        return dataclasses.replace(batch, restored=batch.crops.float().clone(), restore_mode=mode,
                                   color_reference=None)

    device, dtype = model_device_dtype(model)
    restored = _run_batches(model, batch, mode=mode, masks=masks, device=device, dtype=dtype,
                            batch_size=options.batch_size, on_progress=on_progress, check_interrupt=check_interrupt,
                            memory=memory)
    if options.truncate_restored:  # the official FaceGAN's (clip(0, 1) * 255).astype(uint8)
        restored = restored.mul_(255).floor_().div_(255)
    if strength < 1.0:
        restored = torch.lerp(batch.crops.float(), restored, strength)
        if options.truncate_restored:  # the official cv2.addWeighted on uint8: rounded
            restored = restored.mul_(255).round_().div_(255)
    return dataclasses.replace(batch, restored=restored, restore_mode=mode, color_reference=None)  # a new restoration


def _run_batches(model, batch: FaceBatch, *, mode: str, masks: torch.Tensor | None, device: torch.device,
                 dtype: torch.dtype, batch_size: int | None, on_progress, check_interrupt,
                 memory: MemoryPolicy) -> torch.Tensor:
    size, total = batch.size, batch.num_faces
    try:
        restored = torch.empty((total, 3, size, size), dtype=torch.float32, device=batch.crops.device)
    except (RuntimeError, MemoryError) as exc:
        if not memory.is_oom(exc):
            raise
        raise RestoreOutOfMemory(
            f"no room for the {total} restored {size}x{size} faces ({total * 3 * size * size * 4 / 2**30:.2f} GiB "
            f"float32) on {batch.crops.device}: restore fewer images at once or keep the images on the CPU"
        ) from exc
    step = batch_size or auto_batch_size(model, size=size, dtype=dtype, device=device, faces=total, memory=memory)
    done = 0
    finite: list[torch.Tensor] = []  # per step, [n] bool: every value of each face's output finite
    while done < total:
        if check_interrupt is not None:
            check_interrupt()
        stop = min(done + step, total)
        crops = batch.crops[done:stop]
        chunk_masks = masks[done:stop] if masks is not None else None
        try:
            out = _forward(model, prepare_input(crops, mode, chunk_masks), device=device, dtype=dtype,
                           check_interrupt=check_interrupt)
        except (RuntimeError, MemoryError) as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if not memory.is_oom(exc):
                raise
            if step == 1:
                raise RestoreOutOfMemory(
                    f"not even one {size}x{size} face fits in memory on {device} in {str(dtype).replace('torch.', '')}"
                    f" ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). Try fp16/bf16, free memory (close "
                    f"other models, use fewer or smaller images), a smaller GPEN model, or another device."
                ) from exc
            out_of_memory = f"{type(exc).__name__}"
        else:
            finite.append(torch.isfinite(out).flatten(1).all(1))  # read once after the last step: no sync per step
            restored[done:stop] = finish_output(out, crops.float(), mode, chunk_masks)
            done = stop
            if on_progress is not None:
                on_progress(done, total)
            continue
        # out of memory: handled outside the except block, so the traceback's activations are freed
        memory.release(device)
        step = max(1, step // 2)
        logger.warning("out of memory (%s) restoring %d faces at once on %s; retrying with %d",
                       out_of_memory, stop - done, device, step)
    finite_faces = torch.cat(finite)
    if not bool(finite_faces.all()):
        bad = finite_faces.logical_not().nonzero().flatten().tolist()
        shown = ", ".join(map(str, bad[:20])) + (" ..." if len(bad) > 20 else "")
        raise RestoreError(f"the model produced NaN/inf for {len(bad)} of {total} face(s) (index {shown}) in "
                           f"{str(dtype).replace('torch.', '')}; try fp32 or bf16")
    return restored
