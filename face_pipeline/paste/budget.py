"""Paste-back within the memory there is: an estimate of what ``paste_faces`` allocates, and a fallback when it runs
out.

``paste_faces`` holds the output images, the combined mask and one full-size mask per face at the output scale, so at
4x a batch of frames needs far more than the restore did. ``paste_within_memory`` tries the whole batch where the
images are; on out-of-memory it pastes image by image (gathering the results on the CPU), and if even one image does
not fit on an accelerator, image by image on the CPU. Only when one image does not fit on the CPU either is it an
error, saying what to lower.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Iterable, Sequence

import torch

from ..errors import PasteError
from ..memory import DEFAULT_MEMORY, MemoryPolicy
from ..types import FaceBatch, FaceSource, PasteResult, RestoredStep
from .compose import paste_faces
from .options import PasteOptions
from .parsing import ParsingNet
from .placement import CHUNK_BYTES, chunk_bytes
from .scale import choose_scale

logger = logging.getLogger(__name__)


def paste_bytes(batch: FaceBatch, *, options: PasteOptions = PasteOptions(), face_masks: bool = True) -> int:
    """Bytes ``paste_faces`` allocates for ``batch`` with ``options`` (float32 output, masks and, with
    ``face_masks``, per-face masks at the output scale, plus one face's working copies and the placement's chunk of
    stacked crops and samples, at most ``placement.CHUNK_BYTES``)."""
    s = choose_scale(batch, options.scale, max_output_size=options.max_output_size)
    height, width = batch.image_size
    pixels = height * width * s * s
    side = batch.restored.shape[-1] if batch.restored is not None else batch.size
    chunk = chunk_bytes(batch.num_faces, side, min(height, side) * s, min(width, side) * s, True)
    per_face = batch.num_faces if face_masks else 0
    return 4 * (pixels * (batch.num_images * 4 + per_face) + side * side * 3 * 4) + min(chunk, CHUNK_BYTES)


def _select(batch: FaceBatch, images: torch.Tensor, index: int, device: torch.device) -> tuple[FaceBatch, torch.Tensor]:
    """The faces of image ``index`` alone, as a one-image batch on ``device``."""
    members = [i for i, face in enumerate(batch.faces) if face.image_index == index]
    take = torch.as_tensor(members, dtype=torch.long)
    if batch.streamed:  # placeholders: the image's faces come from the source (``_one_by_one``)
        return FaceBatch.placeholder(
            images=batch.images[index:index + 1].to(device),
            faces=[dataclasses.replace(batch.faces[i], image_index=0) for i in members],
            affines=batch.affines[take], inverse_affines=batch.inverse_affines[take], size=batch.size,
            template=batch.template, restore_mode=batch.restore_mode,
            face_sizes=None if batch.face_sizes is None else tuple(batch.face_sizes[i] for i in members)
        ), images[index:index + 1].to(device)
    restored = batch.restored_faces()
    one = dataclasses.replace(
        batch, images=batch.images[index:index + 1].to(device),
        faces=tuple(dataclasses.replace(batch.faces[i], image_index=0) for i in members),
        crops=batch.crops[take.to(batch.crops.device)].to(device),
        affines=batch.affines[take], inverse_affines=batch.inverse_affines[take],
        restored=restored[take.to(restored.device)].to(device),
        face_sizes=None if batch.face_sizes is None else tuple(batch.face_sizes[i] for i in members),
        color_reference=None if batch.color_reference is None else
        batch.color_reference[take.to(batch.color_reference.device)].to(device))
    return one, images[index:index + 1].to(device)


def paste_within_memory(batch: FaceBatch, *, options: PasteOptions = PasteOptions(),
                        images: torch.Tensor | None = None, memory: MemoryPolicy = DEFAULT_MEMORY,
                        background: torch.Tensor | None = None, protect: torch.Tensor | None = None,
                        parsing_net: ParsingNet | None = None, source: FaceSource | None = None,
                        face_masks: bool = True) -> PasteResult:
    """``paste_faces`` of ``batch`` onto ``images`` (default ``batch.images``) with ``options``, ``background``,
    ``protect``, a loaded ``parsing_net``, a face ``source`` and ``face_masks`` (see there), with the fallback of
    the module doc. The result is on the images' device, or on the CPU after a fallback. With a ``source``, a
    fallback asks it again for each image's faces (restoring them again: an out-of-memory paste is the rare case)."""
    if not isinstance(options, PasteOptions):
        raise TypeError(f"options must be a PasteOptions, got {type(options).__name__}")
    images = batch.images if images is None else images
    extra = {"background": background, "protect": protect, "parsing_net": parsing_net, "source": source,
             "face_masks": face_masks}
    try:
        return paste_faces(batch, images=images, options=options, **extra)
    except (RuntimeError, MemoryError) as exc:
        if not memory.is_oom(exc):
            raise
        first = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}" if str(exc) else type(exc).__name__
    device = images.device
    memory.release(device)
    # "auto" must give the whole batch one scale: fix it from all the faces before splitting them up
    options = dataclasses.replace(options, scale=choose_scale(batch, options.scale,
                                                              max_output_size=options.max_output_size))
    logger.warning("out of memory pasting %d image(s) at once on %s (%s): pasting them one by one",
                   batch.num_images, device, first)
    for target in dict.fromkeys([device, torch.device("cpu")]):  # the images' device, then the CPU
        try:
            return _one_by_one(batch, images, target, options, extra)
        except (RuntimeError, MemoryError) as exc:
            if not memory.is_oom(exc):
                raise
            memory.release(target)
            if target.type != "cpu":
                logger.warning("out of memory pasting one image on %s: pasting on the CPU", target)
                continue
            raise PasteError(
                f"not enough memory to paste even one {batch.image_size[1]}x{batch.image_size[0]} image on the CPU "
                f"at this output scale ({type(exc).__name__}); lower output_scale or max_output_size, or paste "
                f"fewer images at once") from exc
    raise AssertionError("unreachable: the CPU attempt returns or raises")


def _one_by_one(batch: FaceBatch, images: torch.Tensor, device: torch.device, options: PasteOptions,
                extra: dict) -> PasteResult:
    parts = []
    background, protect = extra["background"], extra["protect"]
    for index in range(batch.num_images):
        one, image = _select(batch, images, index, device)
        bg = background[index:index + 1].to(device) if background is not None else None
        if protect is not None and protect.dim() >= 3 and protect.shape[0] > 1:  # one protect mask per image
            one_protect = protect[index:index + 1]
        else:
            one_protect = protect
        source = extra["source"]
        if source is not None:  # the image's faces, at their positions in ``batch``, counted within the image
            source = functools.partial(_members_of, source, [i for i, f in enumerate(batch.faces)
                                                             if f.image_index == index])
        result = paste_faces(one, images=image, options=options,
                             **{**extra, "background": bg, "protect": one_protect, "source": source})
        parts.append(dataclasses.replace(result, images=result.images.cpu(), mask=result.mask.cpu(),
                                         face_masks=result.face_masks.cpu()))
    return PasteResult(images=torch.cat([p.images for p in parts]), mask=torch.cat([p.mask for p in parts]),
                       face_masks=torch.cat([p.face_masks for p in parts]), scale=parts[0].scale)


def _members_of(source: FaceSource, members: list[int], positions: Sequence[int]) -> Iterable[RestoredStep]:
    """``source`` for one image's faces: ``positions`` within the image are ``members`` of the whole batch."""
    return source([members[i] for i in positions])
