"""Detect Faces: find, select and align the faces of an image batch; Faces from JSON: the same with faces given
as JSON (Detect Faces' faces_json, edited) instead of detected."""

from __future__ import annotations

import torch

from ..face_pipeline.annotate import annotate_faces
from ..face_pipeline.budgets import MAX_FACES_JSON
from ..face_pipeline.errors import FacesFileError
from ..face_pipeline.face_report import faces_json, faces_report
from ..face_pipeline.given_faces import FACE_FORM, faces_for, parse_faces
from ..face_pipeline.pipeline import AlignOptions, DetectOptions, Pipeline, VideoOptions, selected_faces
from ..face_pipeline.restoration import model_size as size_of
from ..face_pipeline.selection import parse_indices
from . import comfy_bridge as bridge
from .comfy_pipeline import comfy_pipeline
from .handles import GPEN_FACE_DETECTOR, GPEN_FACES
from .inputs import option_input, pipeline_options
from .model_nodes import CATEGORY
from .validation import CheckedWidgets

CROP_SIZES = ("256", "512", "1024", "2048")


def preview_and_report(images: torch.Tensor, choices: list, *, face_detector, options: DetectOptions,
                       restored: bool, pipeline: Pipeline | None = None, model_name: str | None = None,
                       output_scale: int | None = None):
    """The annotated preview (ComfyUI IMAGE) and the JSON face report of a run (``face_detector`` None: the faces
    were given, not detected). ``pipeline``: the one that restored them (None: not restored), for each face's model
    (``Pipeline.face_models``: its size and name, ``model_name`` for one model, the files' names for a set; the
    preview labels them only when a set shared the work)."""
    detector, rotations = ("given", None) if face_detector is None else (face_detector.detector.name,
                                                                         options.rotations)
    models = None if pipeline is None else pipeline.face_models(images, choices, name=model_name)
    model_size = None if pipeline is None or pipeline.model is None else size_of(pipeline.model)  # of a set: largest
    report = faces_report(choices, image_size=(int(images.shape[-2]), int(images.shape[-1])), restored=restored,
                          model_size=model_size, output_scale=output_scale, detector=detector, rotations=rotations,
                          models=models)
    labelled = models if pipeline is not None and pipeline.model_set is not None else None
    return bridge.image_to_comfy(annotate_faces(images, choices, labelled)), faces_json(report)


#: optional inputs shared with the all-in-one node (optional, so prompts saved before they existed still validate)
FINDING_OPTIONAL = {
    "rotations": option_input(DetectOptions, "rotations", tooltip=(
        "Faces on their side or upside down: none = upright faces only (a face turned 90 degrees is missed); "
        "when_missing = if no upright face is found in an image, look again on it turned by 90/180/270 degrees (no "
        "cost on images with faces); always = every image at all four angles (4x the detection time, for pictures "
        "mixing upright and turned faces).")),
    "region_mask": ("MASK", {
        "tooltip": "Optional: only faces this mask covers are restored (e.g. the mask of a face swap or a "
                   "segmentation). One mask for all images or one per image; any size."}),
    "region_overlap": option_input(DetectOptions, "region_overlap", step=0.05, tooltip=(
        "With region_mask: the share of a face's box the mask must cover for the face to count.")),
}
#: outputs shared with the all-in-one node, appended after the original ones so saved links keep their slots
FINDING_OUTPUTS = (("IMAGE", "annotated", ("Every face found, drawn on the image: box, index in the current sort "
                                          "order, score, track id in video mode; selected faces solid green, the "
                                          "others dashed (orange: not picked, gray: filtered out).")),
                   ("STRING", "faces_json", ("Every face as JSON: box, landmarks, score, index, track id, model "
                                             "size, output scale, restored or skipped and why.")))


def crops_or_placeholder(crops: torch.Tensor, size: int) -> torch.Tensor:
    """ComfyUI previews cannot show an empty batch: with no face, one black ``size`` x ``size`` image."""
    if crops.shape[0] == 0:
        return torch.zeros((1, 3, size, size))
    return crops


def check_indices(values: dict, checked: bool | str) -> bool | str:
    """``VALIDATE_INPUTS``' answer with the index text read (when it is a widget value)."""
    if checked is True and isinstance(values.get("indices"), str):
        try:
            parse_indices(values["indices"])
        except ValueError as exc:
            return f"indices: {exc}"
    return checked


class GPENDetectFaces(CheckedWidgets):
    DESCRIPTION = ("Finds the faces in every image of a batch, selects which to restore, and aligns each to GPEN's "
                   "template. A batch is independent images unless video_smoothing is above 0 (then it is the "
                   "frames of a video: faces are tracked, short misses filled in, landmarks smoothed). Connect the "
                   "faces to Restore Faces, then Paste Faces.")
    CATEGORY = CATEGORY
    FUNCTION = "detect"
    RETURN_TYPES = (GPEN_FACES, "IMAGE", "INT", *(kind for kind, _, _ in FINDING_OUTPUTS))
    RETURN_NAMES = ("faces", "aligned_crops", "face_count", *(name for _, name, _ in FINDING_OUTPUTS))
    OUTPUT_TOOLTIPS = (
        "The selected faces with their alignment (and a reference to the source images).",
        "The aligned face crops, for preview (one black image when no face was found).",
        "How many faces were selected, over the whole batch.",
        *(tip for _, _, tip in FINDING_OUTPUTS),
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The image or batch of video frames to search."}),
            "face_detector": (GPEN_FACE_DETECTOR, {"tooltip": "From Load Face Detector."}),
            "select": option_input(DetectOptions, "select",
                                   tooltip="Restore every face, only the largest, or those listed in indices."),
            "indices": ("STRING", {
                "default": "0", "tooltip": "With select = indices: face positions after sorting, e.g. '0,2' or "
                                           "'0-3'."}),
            "sort_by": option_input(DetectOptions, "sort_by"),
            "min_face_size": option_input(DetectOptions, "min_face_size", kind="INT", max=4096,
                                          tooltip="Ignore faces smaller than this many pixels."),
            "max_faces": option_input(DetectOptions, "max_faces", max=256),
            "template": option_input(AlignOptions, "template", tooltip=(
                "gpen: the template GPEN was trained with (best). ffhq: the tighter crop ReActor/FaceFusion use.")),
            "crop_size": (list(CROP_SIZES), {
                "default": "512", "tooltip": "Size of the preview crops. Restore Faces re-crops from the source at "
                                             "the model's own size, so nothing is lost."}),
            # 0 also means "not a video" here: the default is 0, not the smoothing field's
            "video_smoothing": option_input(VideoOptions, "smoothing", default=0.0, step=0.05, tooltip=(
                "0: the batch is independent images (each is handled as if alone). Above 0: the batch is the frames "
                "of one video: faces are tracked (never across a scene cut), a face missed for a few frames is "
                "filled in, and landmarks are smoothed over time this much against jitter (0.3 is a good start).")),
        }, "optional": {  # optional, so prompts saved before it existed still validate
            "fill_gaps": option_input(VideoOptions, "fill_gaps", max=30, tooltip=(
                "Video only: a face the detector missed for at most this many frames between two frames where it "
                "was found is filled in from them and restored there too (0 = off).")),
            **FINDING_OPTIONAL,
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, **values):
        """The widget values (``CheckedWidgets``), and the index text read before the prompt runs."""
        return check_indices(values, super().VALIDATE_INPUTS(**values))

    def detect(self, image, face_detector, indices, crop_size, video_smoothing, region_mask=None, **options):
        """``options``: the other option inputs (select, sort_by, min_face_size, max_faces, template, fill_gaps,
        rotations, region_overlap), each to its record's field (``inputs.pipeline_options``)."""
        images = bridge.image_to_pipeline(image)
        options = pipeline_options(
            options, indices=parse_indices(indices) if options.get("select") == "indices" else (),
            track=video_smoothing > 0, smoothing=float(video_smoothing))
        pipeline = comfy_pipeline(face_detector=face_detector, options=options)
        batch, choices = pipeline.detect_and_align(images, size=int(crop_size),
                                                   region=bridge.mask_to_pipeline(region_mask, "region_mask"))
        crops = crops_or_placeholder(batch.crops, int(crop_size))
        annotated, report = preview_and_report(images, choices, face_detector=face_detector, options=options.detect,
                                               restored=False)
        return (batch, bridge.image_to_comfy(crops), batch.num_faces, annotated, report)


#: the selection and alignment inputs of Detect Faces, which Faces from JSON shares (same names, same widgets)
SHARED_WITH_DETECT = ("select", "indices", "sort_by", "min_face_size", "max_faces", "template", "crop_size")


class GPENFacesFromJSON(CheckedWidgets):
    DESCRIPTION = ("Faces given instead of detected: reads faces as JSON (Detect Faces' faces_json, edited: move a "
                   "landmark, delete a face, add one the detector missed) and aligns them for Restore Faces, as "
                   "Detect Faces does, so faces are detected once and restored many times. Accepts the face report, "
                   "{\"0\": [faces], \"1\": [...]} by image number in the batch, or a list of faces for one image; "
                   "a face is {\"box\": [x0, y0, x1, y1], \"landmarks\": [[x, y] x 5]} in image pixels, the "
                   "landmarks in the order: eye on the image's left, eye on the image's right, nose, mouth left, "
                   "mouth right. Selection (select, indices, sort, min size, max faces, region) applies to them as to "
                   "detected faces; the report's status and reason are not read. Images it lists no face for are "
                   "left unchanged.")
    CATEGORY = CATEGORY
    FUNCTION = "from_json"
    RETURN_TYPES = GPENDetectFaces.RETURN_TYPES
    RETURN_NAMES = GPENDetectFaces.RETURN_NAMES
    OUTPUT_TOOLTIPS = GPENDetectFaces.OUTPUT_TOOLTIPS

    @classmethod
    def INPUT_TYPES(cls):
        detect = GPENDetectFaces.INPUT_TYPES()
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The image (batch) the faces are in; their coordinates are its pixels."}),
            "faces_json": ("STRING", {
                "multiline": True, "default": "",
                "tooltip": (f"The faces as JSON: Detect Faces' faces_json (edited), or {{\"0\": [faces]}} by image "
                            f"number, or a list of faces for one image; a face is {FACE_FORM}. At most "
                            f"{MAX_FACES_JSON // 2**20} MiB. Boxes may reach out of the image (a face cut by the "
                            f"frame); landmarks at most half the box beyond it.")}),
            **{name: detect["required"][name] for name in SHARED_WITH_DETECT},
        }, "optional": {  # optional, as in Detect Faces
            "region_mask": FINDING_OPTIONAL["region_mask"],
            "region_overlap": FINDING_OPTIONAL["region_overlap"],
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, **values):
        """The widget values (``CheckedWidgets``), the index text, and the faces text when it is typed (not linked):
        read before the prompt runs."""
        checked = check_indices(values, super().VALIDATE_INPUTS(**values))
        if checked is True and isinstance(values.get("faces_json"), str):
            try:
                parse_faces(values["faces_json"], source="faces_json")
            except FacesFileError as exc:
                return str(exc)
        return checked

    def from_json(self, image, faces_json, indices, crop_size, region_mask=None, **options):
        """``options``: the other selection and alignment inputs (select, sort_by, min_face_size, max_faces,
        template, region_overlap), each to its record's field (``inputs.pipeline_options``)."""
        images = bridge.image_to_pipeline(image)
        options = pipeline_options(
            options, indices=parse_indices(indices) if options.get("select") == "indices" else ())
        given = parse_faces(faces_json, source="faces_json")
        count, height, width = int(images.shape[0]), int(images.shape[-2]), int(images.shape[-1])
        faces = faces_for(given, given.for_batch(count), sizes=[(width, height)] * count)
        pipeline = comfy_pipeline(options=options)
        choices = pipeline.given(images, faces, region=bridge.mask_to_pipeline(region_mask, "region_mask"))
        batch = pipeline.align(images, selected_faces(choices), size=int(crop_size))
        crops = crops_or_placeholder(batch.crops, int(crop_size))
        annotated, report = preview_and_report(images, choices, face_detector=None, options=options.detect,
                                               restored=False)
        return (batch, bridge.image_to_comfy(crops), batch.num_faces, annotated, report)
