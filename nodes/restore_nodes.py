"""Restore Faces: run the aligned faces through GPEN on ComfyUI's model management."""

from __future__ import annotations

from ..face_pipeline.pipeline import RestoreOptions, VideoOptions
from . import comfy_bridge as bridge
from .comfy_pipeline import comfy_pipeline
from .detection_nodes import crops_or_placeholder
from .handles import GPEN_FACES, GPEN_MODEL
from .inputs import option_input, pipeline_options
from .model_nodes import CATEGORY
from .validation import CheckedWidgets

#: words in a file name that say which GPEN generator it is (the weights cannot tell: same shapes)
MODE_HINTS = {"colorize": "coloriz", "inpaint": "inpaint"}


def check_mode(gpen_model, mode: str, inpaint_mask) -> None:
    """Before any face is restored: the inpaint mask the mode needs, and a warning shown to the user when the model's
    file name says it was made for another mode (GPEN-BFR for colorize/inpaint, or the reverse)."""
    if mode == "inpaint" and inpaint_mask is None:
        raise ValueError("mode 'inpaint' needs the inpaint_mask input connected (a MASK of the image's size, white = "
                         "damaged); for an image whose damage is already painted white, connect an empty mask")
    name = gpen_model.file_name.lower()
    made_for = next((m for m, hint in MODE_HINTS.items() if hint in name), "restore")
    if made_for != mode:
        bridge.warn_user(f"mode {mode!r} with {gpen_model.file_name}, which looks like a model for {made_for!r} by "
                         f"its name: expect poor results (GPEN-BFR: restore, GPEN-Colorization: colorize, "
                         f"GPEN-Inpainting: inpaint)")


class GPENRestoreFaces(CheckedWidgets):
    DESCRIPTION = ("Restores the detected faces with a GPEN model, in batches sized to the free memory (halved "
                   "and retried on out-of-memory). Faces are re-cropped from the source at the model's size. Video "
                   "frames (faces tracked by Detect Faces) can be smoothed over time against flicker.")
    CATEGORY = CATEGORY
    FUNCTION = "restore"
    RETURN_TYPES = (GPEN_FACES, "IMAGE")
    RETURN_NAMES = ("faces", "restored_crops")
    OUTPUT_TOOLTIPS = ("The faces with their restored crops, for Paste Faces.",
                       "The restored crops at the model's resolution, for preview.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "gpen_model": (GPEN_MODEL, {"tooltip": "From Load GPEN Model."}),
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
                "temporal_smoothing": option_input(VideoOptions, "temporal_smoothing", step=0.05, tooltip=(
                    "Video frames (Detect Faces with video_smoothing above 0): blend each restored face with the same "
                    "face in the few frames before it, where the face did not move or change, so it does not flicker "
                    "(0: each frame restored alone). Independent images are not affected.")),
            },
        }

    def restore(self, gpen_model, faces, mode, inpaint_mask=None, **options):
        """``options``: the restore inputs other than ``mode`` (strength), to ``RestoreOptions``, and
        temporal_smoothing, to ``VideoOptions`` (applied when the faces carry track ids: video frames)."""
        check_mode(gpen_model, mode, inpaint_mask)
        options = pipeline_options(options, mode=mode)
        pipeline = comfy_pipeline(gpen_model=gpen_model, options=options)
        restored = pipeline.smooth_over_time(pipeline.restore(
            faces, inpaint_masks=bridge.mask_to_pipeline(inpaint_mask, "inpaint_mask")))
        preview = crops_or_placeholder(restored.restored_faces(), restored.size)
        return (restored, bridge.image_to_comfy(preview))
