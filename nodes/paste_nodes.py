"""Paste Faces: composite restored faces back into the images, optionally at 2x/4x."""

from __future__ import annotations

from ..face_pipeline.errors import PasteError
from ..face_pipeline.fields import check_value, spec
from ..face_pipeline.paste import PARSING_FILES
from ..face_pipeline.paste.parsing import ParsingWeightsMissing, find_parsing_weights
from ..face_pipeline.pipeline import PasteOptions, PipelineOptions
from ..face_pipeline.presets import preset_values
from ..face_pipeline.restoration import output_sides
from ..face_pipeline.types import FaceBatch
from . import comfy_bridge as bridge
from .comfy_pipeline import comfy_pipeline
from .handles import GPEN_FACES
from .inputs import option_input, pipeline_options
from .model_nodes import CATEGORY
from .validation import CheckedWidgets, check_widgets

SCALES = ("1", "2", "4", "auto")


def parsing_folder() -> str | None:
    for file_name, _url in PARSING_FILES.values():
        folder = bridge.find_in_detector_folders(file_name)
        if folder:
            return folder
    return bridge.detector_folder()


def check_paste_options(input_types: dict, values: dict) -> str | bool:
    """ComfyUI's VALIDATE_INPUTS answer for a node with the paste options, before anything in the prompt runs: True,
    or what is wrong with a widget value (``validation.check_widgets``) or the mask type (e.g. the parsing weights
    missing, which would otherwise surface only after every face was restored)."""
    checked = check_widgets(input_types, values)
    mask_type = values.get("mask_type")
    preset = values.get("preset")
    if checked is True and preset not in (None, "none"):  # the all-in-one's preset sets the mask
        try:
            mask_type = preset_values(preset)["mask_type"]
        except ValueError as exc:
            return str(exc)
    if checked is not True or mask_type is None:  # None: linked
        return checked
    try:
        check_value("mask_type", mask_type, spec(PasteOptions, "mask_type"))
    except ValueError as exc:
        return str(exc)
    if mask_type.startswith("parsing"):
        try:
            find_parsing_weights(parsing_folder())
        except ParsingWeightsMissing as exc:
            return f"mask_type {mask_type}: {exc}"
    return True


def check_routed_scale(faces: FaceBatch, scale: int) -> None:
    """Faces restored by a GPEN Model Set (``FaceBatch.face_sizes``) were routed for Restore Faces' output_scale: a
    warning shown to the user when a face restored by one of the smaller models is pasted larger than that model's
    size at this paste's ``scale`` (Restore Faces' output_scale was smaller than this paste's: the face lost detail a
    larger model of the set would have given)."""
    if faces.face_sizes is None:
        return
    largest = max(faces.face_sizes)
    too_big = [(side, own) for face, own in enumerate(faces.face_sizes) if own < largest
               for side in output_sides(faces.affines[face:face + 1], size=own, scale=scale) if side > own * 1.001]
    if too_big:
        side, own = max(too_big)
        bridge.warn_user(f"{len(too_big)} face(s) restored by a smaller model of the GPEN Model Set are pasted larger "
                         f"than that model's size at output scale {scale} (a face of {side:.0f} px by the {own} "
                         f"model): Restore Faces routed them for a smaller output_scale. Set Restore Faces' "
                         f"output_scale to this paste's ({scale}) so each face gets the model that fits its size.")


def paste_options(values: dict) -> PasteOptions:
    """The paste record from a node's paste inputs (``PASTE_INPUTS``, ``PASTE_OPTIONAL``: input name -> value), the
    parsing weights' folder found in the model folders."""
    return pipeline_options(values, names=PASTE_NAMES, parsing_dir=parsing_folder()).paste


def kept_alpha(image, background):
    """The alpha channel an output keeps (``[B, H, W]``, resized to it later): the image's, or where only the
    background has one, the background's; None for RGB."""
    alpha = bridge.image_alpha(image)
    return alpha if alpha is not None or background is None else bridge.image_alpha(background, "background")


#: the paste inputs named otherwise than their ``PasteOptions`` field
PASTE_NAMES = {"output_scale": "scale"}

#: the paste options' inputs, from the record's fields (``inputs.option_input``), in the widget order of saved
#: workflows; a new paste option is its record field, its use, and one line here or in ``PASTE_OPTIONAL``
PASTE_INPUTS = {
    "mask_type": option_input(PasteOptions, "mask_type", tooltip=(
        "Blend mask: feathered rounded rectangle, ellipse, or a face-parsing mask (needs parsing_parsenet.pth or "
        "parsing_bisenet.pth in models/facedetection; parsing_no_hair leaves the hair untouched).")),
    "feather": option_input(PasteOptions, "feather", step=0.01),
    "color_correction": option_input(PasteOptions, "color_correction"),
    "output_scale": option_input(PasteOptions, "scale", choices=SCALES, tooltip=(
        "Paste onto a 1x, 2x or 4x larger image so big restored faces keep their detail; auto picks the smallest "
        "scale that keeps the largest face's full resolution.")),
    "max_output_size": option_input(PasteOptions, "max_output_size", min=512, max=16384, step=64,
                                    tooltip="With output_scale auto: the output's longest side stays within this."),
}

#: optional paste inputs (optional, so prompts saved before they existed still validate)
PASTE_OPTIONAL = {
    "keep_gray": option_input(PasteOptions, "keep_gray", tooltip=(
        "Black-and-white images (R = G = B) stay black-and-white: the restored faces are made gray too. Off: faces "
        "keep the colour the model gives them. Faces restored in colorize mode always keep their colour.")),
    "protect_mask": ("MASK", {
        "tooltip": "Optional: pixels under this mask are never changed by the paste (hands, a microphone, hair in "
                   "front of a face, e.g. from a segmentation node); its edge fades out like the face mask's. One "
                   "mask for all images or one per image; any size."}),
}

#: the paste options the nodes do not show: the official code's steps, which the all-in-one node sets through its
#: ``preset`` input (Paste Faces reaches the official masks through ``mask_type``)
PRESET_ONLY = ("paste_interpolation", "round_pasted", "small_face_blur", "round_output")


class GPENPasteFaces(CheckedWidgets):
    DESCRIPTION = ("Pastes restored faces back into the images they came from with soft masks and colour "
                   "correction, at 1x, 2x, 4x or an automatic scale that keeps GPEN-2048's detail. Connect an "
                   "upscaled image to background to use it instead of a plain resize. Faces restored by a GPEN Model "
                   "Set are each pasted at their own model's size (use the output_scale given to Restore Faces).")
    CATEGORY = CATEGORY
    FUNCTION = "paste"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "face_mask")
    OUTPUT_TOOLTIPS = ("The image with the restored faces, at the output scale.",
                       "Where faces were pasted (0..1), at the output scale.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The same image (batch) the faces were detected in."}),
                "faces": (GPEN_FACES, {"tooltip": "From Restore Faces."}),
                **PASTE_INPUTS,
            },
            "optional": {
                "background": ("IMAGE", {"tooltip": "Optional background (e.g. from an upscale model), resized to "
                                                    "the output size if needed."}),
                **PASTE_OPTIONAL,
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, **values):
        return check_paste_options(cls.INPUT_TYPES(), values)

    def paste(self, image, faces, background=None, protect_mask=None, **options):
        """``options``: the paste inputs (``PASTE_INPUTS``, ``PASTE_OPTIONAL``)."""
        if faces.restored is None:
            raise PasteError("these faces have not been restored yet: connect Restore Faces before Paste Faces")
        result = comfy_pipeline(options=PipelineOptions(paste=paste_options(options))).paste(
            faces, images=bridge.image_to_pipeline(image),
            background=None if background is None else bridge.image_to_pipeline(background, "background"),
            protect=bridge.mask_to_pipeline(protect_mask, "protect_mask"))
        check_routed_scale(faces, result.scale)
        return bridge.image_to_comfy(result.images, kept_alpha(image, background)), bridge.mask_to_comfy(result.mask)
