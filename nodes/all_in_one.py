"""GPEN Face Restore: detect, restore and paste in one node, with the defaults most people want."""

from __future__ import annotations

from ..face_pipeline.pipeline import AlignOptions, DetectOptions, RestoreOptions, VideoOptions
from ..face_pipeline.presets import PRESETS, apply_preset
from . import comfy_bridge as bridge
from .comfy_pipeline import comfy_pipeline
from .detection_nodes import FINDING_OPTIONAL, FINDING_OUTPUTS, preview_and_report
from .handles import GPEN_FACE_DETECTOR, GPEN_MODEL, GPENModel
from .inputs import option_input, pipeline_options
from .model_nodes import CATEGORY
from .paste_nodes import PASTE_INPUTS, PASTE_NAMES, PASTE_OPTIONAL, check_paste_options, kept_alpha, parsing_folder
from .restore_nodes import check_mode
from .validation import CheckedWidgets


class GPENFaceRestore(CheckedWidgets):
    DESCRIPTION = ("Restores every face in an image or a batch with GPEN: detect, align, restore and paste back with "
                   "a soft mask. A batch is independent images unless video is on. The same steps as Detect Faces "
                   "-> Restore Faces -> Paste Faces, in one node. With a GPEN Model Set each face is restored by the "
                   "model that fits its size at the output scale.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "MASK", "INT", *(kind for kind, _, _ in FINDING_OUTPUTS))
    RETURN_NAMES = ("image", "face_mask", "face_count", *(name for _, name, _ in FINDING_OUTPUTS))
    OUTPUT_TOOLTIPS = ("The image with restored faces (unchanged where no face was found).",
                       "Where faces were pasted (0..1).",
                       "How many faces were restored over the whole batch.",
                       *(tip for _, _, tip in FINDING_OUTPUTS))

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The image or batch (independent images, or video frames with video "
                                               "on)."}),
                "gpen_model": (GPEN_MODEL, {"tooltip": "From Load GPEN Model, or GPEN Model Set (several sizes, "
                                                       "each face to the model of its size)."}),
                "face_detector": (GPEN_FACE_DETECTOR, {"tooltip": "From Load Face Detector."}),
                "select": option_input(DetectOptions, "select", choices=("all", "largest"),
                                       tooltip="Restore every face or only the largest."),
                "strength": option_input(RestoreOptions, "strength", step=0.05),
                "template": option_input(AlignOptions, "template",
                                         tooltip="gpen: GPEN's own template (best). ffhq: tighter crop."),
                **PASTE_INPUTS,
            },
            "optional": {
                "background": ("IMAGE", {"tooltip": "Optional background (e.g. from an upscale model)."}),
                "video": option_input(VideoOptions, "track", tooltip=(
                    "Off: every image of the batch is restored as if it were alone. On: the batch is the frames of "
                    "one video: faces are tracked (never across a scene cut), a face missed for up to 3 frames is "
                    "filled in, and landmarks are smoothed against jitter.")),
                **PASTE_OPTIONAL,
                **FINDING_OPTIONAL,
                "preset": (["none", *PRESETS], {"default": "none", "tooltip": (
                    "none: the widgets above. official: reproduce the official GPEN code (bilinear warps, 8-bit "
                    "steps, its parse mask with hair, its blending, 1x, no colour correction; needs "
                    "parsing_parsenet.pth in models/facedetection); its values replace mask_type, feather, "
                    "color_correction, output_scale and keep_gray, strength stays yours (the official alpha). "
                    "official_rect: the same with the official mask of an all-face parse (no parser needed).")}),
                "temporal_smoothing": option_input(VideoOptions, "temporal_smoothing", step=0.05, tooltip=(
                    "With video on: blend each restored face with the same face in the few frames before it, where "
                    "the face did not move or change, so it does not flicker from frame to frame (0: each frame "
                    "restored alone). A scene cut or a new face starts afresh.")),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, **values):
        return check_paste_options(cls.INPUT_TYPES(), values)

    def run(self, image, gpen_model: GPENModel, face_detector, background=None, protect_mask=None, region_mask=None,
            **options):
        """``options``: the option inputs of every stage (select .. max_output_size, video, keep_gray, rotations,
        region_overlap, temporal_smoothing), each to its record's field (``inputs.pipeline_options``), then
        ``preset`` over them (but select, strength and template, which stay the widgets')."""
        images = bridge.image_to_pipeline(image)  # converted once, for detection and paste
        preset = options.pop("preset", None)
        options = apply_preset(pipeline_options(options, names={**PASTE_NAMES, "video": "track"}, mode="restore",
                                                parsing_dir=parsing_folder()), preset,
                               keep={"select", "strength", "template"})
        check_mode(gpen_model, "restore", None)
        pipeline = comfy_pipeline(gpen_model=gpen_model, face_detector=face_detector, options=options)
        result, report = pipeline.run(
            images, region=bridge.mask_to_pipeline(region_mask, "region_mask"),
            protect=bridge.mask_to_pipeline(protect_mask, "protect_mask"), keep_faces=False,  # streamed
            background=None if background is None else bridge.image_to_pipeline(background, "background"))
        if report.choices is None:  # Pipeline.run always reports every face it found
            raise RuntimeError("the pipeline's report came without the faces it found (PipelineReport.choices is "
                               "None): a bug in face_pipeline.Pipeline.run, please report it")
        annotated, faces_json = preview_and_report(images, report.choices, face_detector=face_detector,
                                                   options=options.detect, restored=True, pipeline=pipeline,
                                                   model_name=gpen_model.largest.file_name, output_scale=result.scale)
        return (bridge.image_to_comfy(result.images, kept_alpha(image, background)), bridge.mask_to_comfy(result.mask),
                report.faces_restored,
                annotated, faces_json)
