"""Paste Faces: composite restored faces back into the images, optionally at 2x/4x."""

from __future__ import annotations

import dataclasses

from ..face_pipeline.paste import MASK_TYPES, PARSING_FILES, paste_faces
from . import comfy_bridge as bridge
from .handles import GPEN_FACES
from .model_nodes import CATEGORY

SCALES = ("1", "2", "4", "auto")


def parsing_folder() -> str | None:
    for file_name, _url in PARSING_FILES.values():
        folder = bridge.find_in_detector_folders(file_name)
        if folder:
            return folder
    return bridge.detector_folder()


def run_paste(image, faces, *, mask_type, feather, color_correction, output_scale, max_output_size,
              background=None):
    device = bridge.compute_device()
    images = bridge.image_to_pipeline(image)
    bg = bridge.image_to_pipeline(background).to(device) if background is not None else None
    on_device = dataclasses.replace(faces, images=faces.images.to(device))
    result = paste_faces(on_device, images=images.to(device), mask_type=mask_type, feather=feather,
                         color_correction=color_correction,
                         scale=output_scale if output_scale == "auto" else int(output_scale),
                         max_output_size=max_output_size, background=bg, parsing_dir=parsing_folder())
    return bridge.image_to_comfy(result.images), bridge.mask_to_comfy(result.mask)


PASTE_INPUTS = {
    "mask_type": (list(MASK_TYPES), {
        "default": "rounded_rect", "tooltip": "Blend mask: feathered rounded rectangle, ellipse, or a face-parsing "
                                              "mask (needs parsing_parsenet.pth or parsing_bisenet.pth in "
                                              "models/facedetection; parsing_no_hair leaves the hair untouched)."}),
    "feather": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 0.5, "step": 0.01,
                          "tooltip": "Softness of the mask edge, as a fraction of the face size."}),
    "color_correction": ("BOOLEAN", {"default": True,
                                     "tooltip": "Match the restored face's colours to the original face."}),
    "output_scale": (list(SCALES), {
        "default": "1", "tooltip": "Paste onto a 1x, 2x or 4x larger image so big restored faces keep their "
                                   "detail; auto picks the smallest scale that keeps the largest face's full "
                                   "resolution."}),
    "max_output_size": ("INT", {"default": 8192, "min": 512, "max": 16384, "step": 64,
                                "tooltip": "With output_scale auto: the output's longest side stays within this."}),
}


class GPENPasteFaces:
    DESCRIPTION = ("Pastes restored faces back into the images they came from with soft masks and colour "
                   "correction, at 1x, 2x, 4x or an automatic scale that keeps GPEN-2048's detail. Connect an "
                   "upscaled image to background to use it instead of a plain resize.")
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
            },
        }

    def paste(self, image, faces, mask_type, feather, color_correction, output_scale, max_output_size,
              background=None):
        return run_paste(image, faces, mask_type=mask_type, feather=feather, color_correction=color_correction,
                         output_scale=output_scale, max_output_size=max_output_size, background=background)
