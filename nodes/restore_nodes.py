"""Restore Faces: run the aligned faces through GPEN on ComfyUI's model management."""

from __future__ import annotations

import torch

from ..face_pipeline.pipeline import PasteOptions, RestoreOptions, VideoOptions
from ..face_pipeline.types import FaceBatch
from . import comfy_bridge as bridge
from .comfy_pipeline import comfy_pipeline
from .detection_nodes import crops_or_placeholder
from .handles import GPEN_FACES, GPEN_MODEL, GPENModel, GPENModelSetHandle
from .inputs import option_input, pipeline_options
from .model_nodes import CATEGORY, made_for
from .paste_nodes import PASTE_NAMES, SCALES
from .validation import CheckedWidgets


def check_mode(gpen_model: GPENModel, mode: str, inpaint_mask) -> None:
    """Before any face is restored: a model set only in restore mode, the inpaint mask the mode needs, and a warning
    shown to the user when a model's file name says it was made for another mode (GPEN-BFR for colorize/inpaint, or
    the reverse)."""
    if isinstance(gpen_model, GPENModelSetHandle) and mode != "restore":
        raise ValueError(f"mode {mode!r} with a GPEN Model Set ({gpen_model.file_names}): a set is for restore mode "
                         f"only (each face to the GPEN-BFR model of its size); connect the one Colorization or "
                         f"Inpainting model from Load GPEN Model instead")
    if mode == "inpaint" and inpaint_mask is None:
        raise ValueError("mode 'inpaint' needs the inpaint_mask input connected (a MASK of the image's size, white = "
                         "damaged); for an image whose damage is already painted white, connect an empty mask")
    for member in gpen_model.members:
        if made_for(member.file_name) != mode:
            bridge.warn_user(f"mode {mode!r} with {member.file_name}, which looks like a model for "
                             f"{made_for(member.file_name)!r} by its name: expect poor results (GPEN-BFR: restore, "
                             f"GPEN-Colorization: colorize, GPEN-Inpainting: inpaint)")


def preview_crops(batch: FaceBatch) -> torch.Tensor:
    """The restored crops ``[F, 3, S, S]`` as one preview batch: with faces restored by models of different sizes
    (``FaceBatch.face_sizes``: face i in the top-left ``face_sizes[i]`` square of side-S crops), each face's square
    resized to the largest side S (bilinear, for the eye only: Paste Faces uses the crops as restored)."""
    restored = batch.restored_faces()
    if batch.face_sizes is None:
        return restored
    side = batch.size
    shown = []
    for face, own in enumerate(batch.face_sizes):
        crop = restored[face:face + 1, :, :own, :own]
        shown.append(crop if own == side else torch.nn.functional.interpolate(
            crop, size=(side, side), mode="bilinear", align_corners=False).clamp(0, 1))
    return torch.cat(shown) if shown else restored


class GPENRestoreFaces(CheckedWidgets):
    DESCRIPTION = ("Restores the detected faces with a GPEN model, in batches sized to the free memory (halved "
                   "and retried on out-of-memory). Faces are re-cropped from the source at the model's size. With a "
                   "GPEN Model Set each face is restored by the model that fits its size in the output, at the "
                   "output_scale Paste Faces will use. Video frames (faces tracked by Detect Faces) can be smoothed "
                   "over time against flicker.")
    CATEGORY = CATEGORY
    FUNCTION = "restore"
    RETURN_TYPES = (GPEN_FACES, "IMAGE")
    RETURN_NAMES = ("faces", "restored_crops")
    OUTPUT_TOOLTIPS = ("The faces with their restored crops, for Paste Faces.",
                       "The restored crops at the model's resolution, for preview (with a GPEN Model Set, each face "
                       "resized to the largest model's size).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "gpen_model": (GPEN_MODEL, {"tooltip": "From Load GPEN Model, or GPEN Model Set (several sizes, "
                                                       "each face to the model of its size)."}),
                "faces": (GPEN_FACES, {"tooltip": "From Detect Faces."}),
                "mode": option_input(RestoreOptions, "mode", tooltip=(
                    "restore: GPEN-BFR models. colorize: GPEN-Colorization (keeps the photo's brightness). inpaint: "
                    "GPEN-Inpainting, with inpaint_mask marking the damage.")),
                "strength": option_input(RestoreOptions, "strength", step=0.05, tooltip=(
                    "Blend of restored (1) and original (0) face. Lower it (e.g. 0.7) to keep more of the original "
                    "look.")),
            },
            "optional": {
                "inpaint_mask": ("MASK", {"tooltip": "inpaint mode: white where the image is damaged (same size "
                                                     "as the image)."}),
                # appended: saved workflows keep their widget order
                "output_scale": option_input(PasteOptions, "scale", choices=SCALES, tooltip=(
                    "With a GPEN Model Set: the output scale Paste Faces will use, so each face gets the model that "
                    "fits its pasted size (auto: as Paste Faces' auto with the default max_output_size). Without a "
                    "set it changes nothing.")),
                "temporal_smoothing": option_input(VideoOptions, "temporal_smoothing", step=0.05, tooltip=(
                    "Video frames (Detect Faces with video_smoothing above 0): blend each restored face with the same "
                    "face in the few frames before it, where the face did not move or change, so it does not flicker "
                    "(0: each frame restored alone). Independent images are not affected.")),
            },
        }

    def restore(self, gpen_model: GPENModel, faces, mode, inpaint_mask=None, **options):
        """``options``: the restore inputs other than ``mode`` (strength) to ``RestoreOptions``, ``output_scale``
        to ``PasteOptions.scale`` (with a set, the scale the faces are routed for), and ``temporal_smoothing`` to
        ``VideoOptions`` (applied when the faces carry track ids: video frames)."""
        check_mode(gpen_model, mode, inpaint_mask)
        options = pipeline_options(options, names=PASTE_NAMES, mode=mode)
        pipeline = comfy_pipeline(gpen_model=gpen_model, options=options)
        restored = pipeline.smooth_over_time(pipeline.restore(
            faces, inpaint_masks=bridge.mask_to_pipeline(inpaint_mask, "inpaint_mask")))
        preview = crops_or_placeholder(preview_crops(restored), restored.size)
        return (restored, bridge.image_to_comfy(preview))
