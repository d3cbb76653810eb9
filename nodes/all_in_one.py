"""GPEN Face Restore: detect, restore and paste in one node, with the defaults most people want."""

from __future__ import annotations

from ..face_pipeline.alignment import TEMPLATES
from ..face_pipeline.pipeline import PipelineOptions, detect_and_align
from ..face_pipeline.restoration import model_size
from . import comfy_bridge as bridge
from .handles import GPEN_FACE_DETECTOR, GPEN_MODEL
from .model_nodes import CATEGORY
from .paste_nodes import PASTE_INPUTS, run_paste
from .restore_nodes import run_restore


class GPENFaceRestore:
    DESCRIPTION = ("Restores every face in an image or a batch of video frames with GPEN: detect, align, restore "
                   "and paste back with a soft mask. The same steps as Detect Faces -> Restore Faces -> Paste "
                   "Faces, in one node.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "MASK", "INT")
    RETURN_NAMES = ("image", "face_mask", "face_count")
    OUTPUT_TOOLTIPS = ("The image with restored faces (unchanged where no face was found).",
                       "Where faces were pasted (0..1).",
                       "How many faces were restored over the whole batch.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The image or batch of video frames."}),
                "gpen_model": (GPEN_MODEL, {"tooltip": "From Load GPEN Model."}),
                "face_detector": (GPEN_FACE_DETECTOR, {"tooltip": "From Load Face Detector."}),
                "select": (["all", "largest"], {"default": "all",
                                                "tooltip": "Restore every face or only the largest."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                       "tooltip": "Blend of restored (1) and original (0) face."}),
                "template": (list(TEMPLATES), {"default": "gpen",
                                               "tooltip": "gpen: GPEN's own template (best). ffhq: tighter crop."}),
                **PASTE_INPUTS,
            },
            "optional": {
                "background": ("IMAGE", {"tooltip": "Optional background (e.g. from an upscale model)."}),
            },
        }

    def run(self, image, gpen_model, face_detector, select, strength, template, mask_type, feather,
            color_correction, output_scale, max_output_size, background=None):
        images = bridge.image_to_pipeline(image)
        options = PipelineOptions(select=select, template=template)
        with face_detector.lock:
            faces, _found = detect_and_align(images, detector=face_detector.detector, options=options,
                                             size=model_size(gpen_model.patcher.model),
                                             check_interrupt=bridge.Progress.check_interrupt)
        restored = run_restore(gpen_model, faces, mode="restore", strength=strength)
        out, mask = run_paste(image, restored, mask_type=mask_type, feather=feather,
                              color_correction=color_correction, output_scale=output_scale,
                              max_output_size=max_output_size, background=background)
        return (out, mask, restored.num_faces)
