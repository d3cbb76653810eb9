"""Pasting restored faces back: each restored crop (at its full model resolution) is warped straight into the
output image, which may be 2x or 4x the input, so a 2048 face keeps its detail instead of being squeezed back
into the input's pixels first.

Per face, only its footprint (the output box its crop covers) is touched: ``placement.py`` samples the faces there,
all faces of a chunk in one bicubic ``grid_sample`` from the restored crops (first shrunk with an antialiased filter
if a crop has more than 2 crop pixels per output pixel, so a 2048 face pasted small does not alias), with their
masks evaluated there directly (rounded_rect, ellipse) or warped bilinearly (parsing). This module prepares the
crops (colour correction, black-and-white images) and composites: overlapping faces, the larger mask value wins per
pixel and brings its face (the official rule); a protect mask holds faces off; output = background + mask *
(face - background), computed only inside the faces' boxes; frames without faces are the background (the resized
input or the caller's background).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import InvalidImageError, PasteError
from ..region import masks_for
from ..types import FaceBatch, FaceSource, PasteResult, RestoredStep
from .color import STATS_SIZE, gray_images, match_color, to_gray
from .masks import ANALYTIC_MASKS, MASK_TYPES, OFFICIAL_MASKS, mask_at
from .official_mask import official_rect_mask, small_face_blur
from .options import PasteOptions
from .parsing import ParsingNet, parsing_mask
from .placement import PlacedFaces, Placement, place_faces, plan_placements
from .protect import keep_weights
from .scale import choose_scale

logger = logging.getLogger(__name__)

__all__ = ["MASK_TYPES", "crop_masks", "paste_faces"]


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic (antialiased when shrinking) resize of ``[B, 3, h, w]`` to ``size``; always a new float32 tensor."""
    if tuple(images.shape[-2:]) == size:
        return images.float().clone()
    return F.interpolate(images.float(), size=size, mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)


def crop_masks(faces: torch.Tensor, *, mask_type: str, feather: float,
               parsing_dir: str | Path | None = None, size: int | None = None,
               parsing_net: ParsingNet | None = None) -> torch.Tensor:
    """``[F, 1, s, s]`` masks in crop space for the restored ``faces`` ``[F, 3, S, S]`` (``s = size or S``)."""
    side = size or faces.shape[-1]
    if mask_type in ANALYTIC_MASKS:
        c = (torch.arange(side, device=faces.device, dtype=torch.float32) + 0.5) / side
        return mask_at(mask_type, c[None, :], c[:, None], feather=feather).expand(len(faces), 1, side, side)
    if mask_type == "rect_official":
        masks = official_rect_mask(512, device=faces.device).expand(len(faces), 1, 512, 512)
    elif mask_type in ("parsing", "parsing_no_hair", "parsing_official"):
        masks = parsing_mask(faces, parsing_dir=parsing_dir, keep_hair=mask_type != "parsing_no_hair",
                             feather=feather, net=parsing_net, official=mask_type == "parsing_official")
    else:
        raise PasteError(f"unknown mask type {mask_type!r}; choose one of {', '.join(MASK_TYPES)}")
    if side != masks.shape[-1]:
        masks = F.interpolate(masks, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    return masks


def _check_inputs(batch: FaceBatch, images: torch.Tensor, options: PasteOptions) -> torch.Tensor:
    """``PasteError`` unless ``batch`` is restored and ``images`` are the ones its faces came from (the options were
    checked when their record was built). Returns ``batch.restored``."""
    if not isinstance(options, PasteOptions):
        raise TypeError(f"options must be a PasteOptions, got {type(options).__name__}")
    if batch.restored is None:
        raise PasteError("these faces have not been restored yet: run the restore step before pasting")
    if images.dim() != 4 or images.shape[0] != batch.num_images or tuple(images.shape[-2:]) != batch.image_size:
        raise PasteError(
            f"these faces were detected on a batch of {batch.num_images} images of "
            f"{batch.image_size[1]}x{batch.image_size[0]}; got images of shape {list(images.shape)} "
            f"([B, 3, H, W]). Paste onto the same images the faces came from."
        )
    if batch.restored.dim() != 4 or batch.restored.shape[0] != batch.num_faces \
            or batch.restored.shape[-1] != batch.restored.shape[-2]:
        raise PasteError(f"restored faces must be [{batch.num_faces}, 3, S, S], got {list(batch.restored.shape)}")
    if batch.color_reference is not None and batch.color_reference.shape[0] != batch.num_faces:
        raise PasteError(f"the colour references must be one per face, [{batch.num_faces}, 3, m, m], got "
                         f"{list(batch.color_reference.shape)}")
    return batch.restored


def paste_faces(
    batch: FaceBatch,
    *,
    images: torch.Tensor | None = None,
    options: PasteOptions = PasteOptions(),
    background: torch.Tensor | None = None,
    protect: torch.Tensor | None = None,
    parsing_net: ParsingNet | None = None,
    source: FaceSource | None = None,
    face_masks: bool = True,
) -> PasteResult:
    """Paste ``batch.restored`` ``[F, 3, S, S]`` (RGB 0..1) onto ``images`` (default ``batch.images``, which it must
    match in shape) with ``options`` (``PasteOptions``, validated when built): at output scale ``options.scale`` (1,
    2, 4 or ``"auto"`` within ``max_output_size``, see ``scale.py``), with mask ``mask_type`` (one of
    ``MASK_TYPES``) faded over ``feather`` of the crop side (0..0.5); ``color_correction``: match the restored
    faces' colour statistics to the original crops' inside the mask (``color.py``; to ``batch.color_reference``
    or the steps' when given: video, ``video/temporal.py``); ``parsing_dir``: the folder
    holding ``parsing_parsenet.pth`` or ``parsing_bisenet.pth`` for the parsing masks (unless ``parsing_net`` is
    given, loaded); ``keep_gray``: faces of black-and-white images made gray (not in colorize mode).

    ``background``: optional ``[B, 3, h, w]`` 0..1 images (e.g. from an upscale model) used instead of the
    bicubic-resized input, resized to the output size if needed; ``protect``: optional ``[N, H, W]``
    0..1 mask (one per image or one for all, any size, resized to the output): where it is 1 the output keeps the
    background exactly (byte-identical), and its edge fades outwards over the face mask's feather (``protect.py``).
    Returns images ``[B, 3, H*s, W*s]`` float32, the combined mask ``[B, H*s, W*s]``, the per-face masks
    ``[F, H*s, W*s]`` (``[0, H*s, W*s]`` with ``face_masks=False``: they grow with the faces) and ``s``, all on the
    images' device.

    Streaming: with a ``source`` (``types.FaceSource``), ``batch`` is a ``FaceBatch.placeholder`` and the restored
    faces come from ``source`` step by step; each step is pasted as it comes and let go, so only one step's crops
    are alive at a time. Faces are composited in the same order either way, with the same values bit for bit.
    """
    images = batch.images if images is None else images
    restored = _check_inputs(batch, images, options)
    mask_type, feather = options.mask_type, options.feather
    s = choose_scale(batch, options.scale, max_output_size=options.max_output_size)
    height, width = batch.image_size
    out_h, out_w = height * s, width * s
    device = images.device
    if background is not None:
        if background.dim() != 4 or background.shape[0] != batch.num_images or background.shape[1] != 3:
            raise PasteError(f"the background must be [{batch.num_images}, 3, h, w], got {list(background.shape)}")
        out = _resize(background.to(device), (out_h, out_w))
    else:
        out = _resize(images, (out_h, out_w))
    if protect is not None:
        try:
            protect = masks_for(protect, batch=batch.num_images, size=(out_h, out_w), what="protect mask").to(device)
        except InvalidImageError as exc:
            raise PasteError(str(exc)) from exc
        if not bool(protect.any()):  # nothing protected (one sync per call): the masks stay as they are
            protect = None
    full_mask = torch.zeros((batch.num_images, out_h, out_w), device=device)
    per_face = torch.zeros((batch.num_faces if face_masks else 0, out_h, out_w), device=device)
    if batch.num_faces == 0:
        return PasteResult(images=out, mask=full_mask, face_masks=per_face, scale=s)

    size = restored.shape[-1]
    placements = plan_placements(batch, scale=s, size=size, prefilter=options.paste_interpolation == "bicubic")
    gray = gray_images(images) if options.keep_gray and batch.restore_mode != "colorize" else None  # [B] bool
    compositor = _Compositor(out, full_mask, per_face if face_masks else None, placements, protect=protect,
                             feather=feather, round_output=options.round_output)
    if source is None:
        steps: Iterable[RestoredStep] = [RestoredStep(first=0, crops=batch.crops, restored=restored,
                                                      color_reference=batch.color_reference)]
    elif not batch.streamed:
        raise PasteError("a face source comes with a placeholder batch (FaceBatch.placeholder), not restored faces")
    else:
        steps = source(range(batch.num_faces))
    done = 0
    for step in _of_one_side(steps, batch):  # each step's faces: prepared, placed and composited, then let go
        count = step.restored.shape[0]
        side = batch.side(done) if batch.face_sizes is not None else size
        if step.first != done or tuple(step.restored.shape[1:]) != (3, side, side) \
                or step.crops.shape[0] != count:
            raise PasteError(f"the face source gave faces {step.first}..{step.first + count} "
                             f"{list(step.restored.shape)}, expected face {done} on, [n, 3, {side}, {side}]")
        faces = _prepared(batch, step, images, gray, options=options, parsing_net=parsing_net)
        masks = faces[1]
        mine = [p for p in placements if done <= p.face < done + count]
        compositor.add(place_faces(faces[0], mine, mask_type=mask_type, feather=feather, masks=masks, first=done,
                                   interpolation=options.paste_interpolation, rounded=options.round_pasted,
                                   exact_ones=mask_type in OFFICIAL_MASKS))
        done += count
        del faces, masks, step
    if done != batch.num_faces:
        raise PasteError(f"the face source gave {done} of the {batch.num_faces} faces")
    return PasteResult(images=out.clamp_(0, 1), mask=full_mask, face_masks=per_face, scale=s)


def _of_one_side(steps: Iterable[RestoredStep], batch: FaceBatch) -> Iterator[RestoredStep]:
    """``steps`` split into runs of faces of one side (``FaceBatch.face_sizes``: faces restored by models of
    different sizes, held in the top-left of ``[n, 3, size, size]`` when not streamed), each at its own side; as they
    are for a batch of one side."""
    if batch.face_sizes is None:
        yield from steps
        return
    for step in steps:
        count, k = step.restored.shape[0], 0
        while k < count:
            side = batch.side(step.first + k)
            end = k + 1
            while end < count and batch.side(step.first + end) == side:
                end += 1
            if step.restored.shape[-1] == side and k == 0 and end == count:
                yield step
            else:
                small = min(STATS_SIZE, side)  # the colour reference's side (``types.FaceBatch.color_reference``)
                reference = None if step.color_reference is None else step.color_reference[k:end, :, :small, :small]
                yield RestoredStep(first=step.first + k, crops=step.crops[k:end, :, :side, :side],
                                   restored=step.restored[k:end, :, :side, :side], color_reference=reference)
            k = end


def _prepared(batch: FaceBatch, step: RestoredStep, images: torch.Tensor, gray: torch.Tensor | None, *,
              options: PasteOptions, parsing_net: ParsingNet | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A step's restored faces ``[n, 3, S, S]`` on the images' device, colour-corrected and made gray as asked, and
    their crop-space masks ``[n, 1, S, S]`` (None for analytic masks: evaluated where they land). Face by face the
    same values as for the whole batch at once: every operation here treats each face on its own."""
    device = images.device
    faces = step.restored.to(device=device, dtype=torch.float32)
    size = faces.shape[-1]
    mask_type, feather = options.mask_type, options.feather
    masks = None if mask_type in ANALYTIC_MASKS else crop_masks(faces, mask_type=mask_type, feather=feather,
                                                                 parsing_dir=options.parsing_dir,
                                                                 parsing_net=parsing_net)
    if options.small_face_blur > 0:  # after the mask, as the official code (its parser sees the unblurred face)
        small = [min(face.width, face.height) < options.small_face_blur
                 for face in batch.faces[step.first:step.first + faces.shape[0]]]
        if any(small):
            flags = torch.as_tensor(small, device=device)[:, None, None, None]
            faces = torch.where(flags, small_face_blur(faces, rounded=options.round_pasted), faces)
    if options.color_correction:
        originals = step.crops.to(device=device, dtype=torch.float32)
        stats_masks = masks if masks is not None else crop_masks(
            faces, mask_type=mask_type, feather=feather, size=min(STATS_SIZE, size))
        reference = None if step.color_reference is None else step.color_reference.to(device=device)
        faces = match_color(faces, originals, stats_masks, reference=reference)
    if gray is not None:
        indices = batch.image_indices[step.first:step.first + faces.shape[0]]
        face_gray = gray[torch.as_tensor(indices, device=device)]  # [n]
        if face_gray.any():
            faces = torch.where(face_gray[:, None, None, None], to_gray(faces), faces)
    return faces, masks


class _Compositor:
    """Blends placed faces into ``out`` ``[B, 3, H, W]`` in place, chunk by chunk as they come, filling ``full_mask``
    ``[B, H, W]`` and ``face_masks`` ``[F, H, W]`` (or None: not kept).

    Per image, over the union of its faces' footprints: the larger mask value wins per pixel and brings its face
    (the official rule; the first face wins a tie), then ``out = background + mask * (face - background)`` once the
    image's last face is in (``round_output``: the official ``background * (1 - mask) + face * mask`` on 8-bit
    levels, rounded). A ``protect`` mask ``[B, H, W]`` scales each face's mask down near and inside the
    protected region. Faces must arrive in ``placements``' order."""

    def __init__(self, out: torch.Tensor, full_mask: torch.Tensor, face_masks: torch.Tensor | None,
                 placements: list[Placement], *, protect: torch.Tensor | None, feather: float,
                 round_output: bool = False) -> None:
        self.out, self.full_mask, self.face_masks = out, full_mask, face_masks
        self.round_output = round_output
        self.protect, self.feather = protect, feather
        self.last = {p.image: p.face for p in placements}  # the last face of each image: its composite is complete
        self.unions: dict[int, tuple[int, int, int, int]] = {}
        for p in placements:
            x0, y0, x1, y1 = self.unions.get(p.image, p.box)
            self.unions[p.image] = (min(x0, p.box[0]), min(y0, p.box[1]), max(x1, p.box[2]), max(y1, p.box[3]))
        self.foregrounds: dict[int, torch.Tensor] = {}  # per image being composited: [3, h, w] over its union

    def add(self, placed: Iterable[PlacedFaces]) -> None:
        out, full_mask, device = self.out, self.full_mask, self.out.device
        for chunk in placed:
            for k, p in enumerate(chunk.placements):  # device work only: no host sync per face
                b, (x0, y0, x1, y1) = p.image, p.box
                face_mask = chunk.mask(k)
                if self.protect is not None:  # the fade of the protected region: as wide as the face mask's
                    face_mask = face_mask * keep_weights(self.protect[b], p.box,
                                                         self.feather * p.side * p.output_pixels_per_crop_pixel)
                if self.face_masks is not None:
                    self.face_masks[p.face, y0:y1, x0:x1] = face_mask
                    face_mask = self.face_masks[p.face, y0:y1, x0:x1]
                ux0, uy0, ux1, uy1 = self.unions[b]
                if b not in self.foregrounds:
                    self.foregrounds[b] = torch.zeros((3, uy1 - uy0, ux1 - ux0), device=device)
                sub_mask = full_mask[b, y0:y1, x0:x1]
                sub_fg = self.foregrounds[b][:, y0 - uy0:y1 - uy0, x0 - ux0:x1 - ux0]
                wins = face_mask > sub_mask  # overlapping faces: the larger mask value wins per pixel
                # torch.where, not boolean indexing: the same values without a host sync on a GPU
                sub_mask.copy_(torch.where(wins, face_mask, sub_mask))
                sub_fg.copy_(torch.where(wins, chunk.face(k), sub_fg))
                if self.last[b] == p.face:
                    region = out[b, :, uy0:uy1, ux0:ux1]
                    if self.round_output:  # the official blend, on 8-bit levels, rounded half to even
                        m = full_mask[b, uy0:uy1, ux0:ux1]
                        background, face = region.mul(255).round_(), self.foregrounds.pop(b).mul(255).round_()
                        region.copy_((background * (1 - m) + face * m).abs_().round_().div_(255))
                    else:
                        region.add_(full_mask[b, uy0:uy1, ux0:ux1] * (self.foregrounds.pop(b) - region))
