"""Loader nodes: a GPEN model from the model folders, a set of GPEN models of different sizes, and a face detector
with its weights."""

from __future__ import annotations

from typing import Any, cast

from ..face_pipeline.detection import DEFAULT_DETECTOR, DETECTOR_NAMES, WEIGHT_FILES, load_detector
from ..face_pipeline.options import detector_threshold
from ..face_pipeline.restoration import ModelSet, RestoreOptions
from . import comfy_bridge as bridge
from .handles import GPEN_FACE_DETECTOR, GPEN_MODEL, DetectorHandle, GPENModel, GPENModelHandle, GPENModelSetHandle
from .inputs import option_input
from .validation import CheckedWidgets

CATEGORY = "image/restoration/GPEN"

#: words in a file name that say which GPEN generator it is (the weights cannot tell: same shapes)
MODE_HINTS = {"colorize": "coloriz", "inpaint": "inpaint"}


def made_for(file_name: str) -> str:
    """The mode a GPEN file is made for by its name: colorize, inpaint, else restore (GPEN-BFR)."""
    name = file_name.lower()
    return next((mode for mode, hint in MODE_HINTS.items() if hint in name), "restore")


class GPENLoadModel:
    DESCRIPTION = ("Loads a GPEN face-restoration model (GPEN-BFR-256/512/1024/2048, or the Colorization / "
                   "Inpainting / Seg2face generators) from models/gpen or models/facerestore_models. Size and width "
                   "are read from the weights; ComfyUI loads and offloads it like its other models.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (GPEN_MODEL,)
    RETURN_NAMES = ("gpen_model",)
    OUTPUT_TOOLTIPS = ("The GPEN model, managed by ComfyUI (loaded to the GPU when a node needs it).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (bridge.list_gpen_files(), {
                "tooltip": "A GPEN checkpoint (.pth, .pt, .bin or .safetensors) in models/gpen or "
                           "models/facerestore_models. GPEN-BFR-2048 keeps the most detail."}),
            "precision": (list(bridge.PRECISIONS), {
                "default": "auto",
                "tooltip": "auto follows ComfyUI's choice for your device (fp16 on most GPUs, fp32 on the CPU). "
                           "fp16/bf16 halve the memory and are faster on GPUs."}),
        }, "optional": {  # optional, so API prompts saved before it existed still validate
            "cuda_graphs": ("BOOLEAN", {
                "default": False,
                "tooltip": "NVIDIA GPUs: replay the network as a captured CUDA graph, which removes the per-layer "
                           "launch cost (faster at small batches; figures in the README's Performance table). The "
                           "graph keeps one batch's working memory reserved while the model stays on the GPU and "
                           "ComfyUI does not see it: leave off when VRAM is tight."}),
        }}

    @classmethod
    def IS_CHANGED(cls, model_name: str, precision: str, cuda_graphs: bool = False):
        """A file replaced under the same name is loaded again (ComfyUI re-runs a node when this value changes)."""
        return bridge.file_signature(model_name)

    def load(self, model_name: str, precision: str, cuda_graphs: bool = False):
        return (bridge.load_gpen_model(model_name, precision, cuda_graphs=cuda_graphs),)


class GPENLoadFaceDetector(CheckedWidgets):
    DESCRIPTION = ("Loads a face detector with its weights from models/facedetection: RetinaFace ResNet-50 (the "
                   "official GPEN detector, most accurate), RetinaFace MobileNet-0.25 (small), YuNet in PyTorch "
                   "(runs on the GPU) or OpenCV YuNet (fastest on the CPU).")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (GPEN_FACE_DETECTOR,)
    RETURN_NAMES = ("face_detector",)
    OUTPUT_TOOLTIPS = ("The face detector, for Detect Faces or GPEN Face Restore.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "detector": (list(DETECTOR_NAMES), {
                "default": DEFAULT_DETECTOR,
                "tooltip": "Which detector. yunet_opencv (the default) ships with the pack and works offline; the "
                           "others are downloaded on first use. Weight files: " + "; ".join(
                    f"{k}: {v.file_name}" for k, v in WEIGHT_FILES.items())}),
            "allow_download": ("BOOLEAN", {
                "default": True,
                "tooltip": "Download missing weights from their official URL into models/facedetection (checked "
                           "by sha256). Off: a missing file is an error naming the file and where to get it."}),
            "score_threshold": ("FLOAT", {
                "default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                "tooltip": "Minimum detection confidence. 0 uses the detector's own default (0.9 RetinaFace and "
                           "YuNet, 0.6 OpenCV YuNet); otherwise 0.3 to 1 (lower values find noise, not faces). "
                           "The CLI's --threshold means the same."}),
        }, "optional": {  # optional, so API prompts saved before it existed still validate
            "max_side": ("INT", {
                "default": 0, "min": 0, "max": 16384, "step": 64,
                "tooltip": "Large images are searched on a downscaled copy whose longest side is this (0 = the "
                           "detector's default: 1000 px for RetinaFace above 1500 px as in the official GPEN, 1280 "
                           "YuNet, 1920 OpenCV YuNet). Raise it to find small faces in big frames (slower)."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, **values):
        """The widgets (``CheckedWidgets``), and the threshold's floor before anything in the prompt runs."""
        checked = super().VALIDATE_INPUTS(**values)
        if checked is not True or values.get("score_threshold") is None:  # None: linked
            return checked
        try:
            detector_threshold(values["score_threshold"])
        except ValueError as exc:
            return str(exc)
        return True

    def load(self, detector: str, allow_download: bool, score_threshold: float, max_side: int = 0):
        folder = bridge.find_in_detector_folders(WEIGHT_FILES[detector].file_name) or bridge.detector_folder()
        threshold = detector_threshold(score_threshold)  # 0: the detector's own, as in the CLI; NaN refused
        built = load_detector(detector, weights_dir=folder, allow_download=allow_download, device="cpu",
                              score_threshold=threshold, max_side=max_side or None)
        # the network goes under ComfyUI's model management: loaded to the GPU for detection, offloaded when other
        # models need the room (detection follows wherever it is)
        return (DetectorHandle(detector=built, patcher=bridge.module_patcher(built.module)),)


#: the Model Set node's model inputs: two required, two optional (a set holds 2 to 4 models)
SET_INPUTS = ("model_1", "model_2", "model_3", "model_4")


class GPENModelSet(CheckedWidgets):
    DESCRIPTION = ("Several GPEN-BFR models of different sizes used as one: each face is restored by the model that "
                   "fits its size in the output image. smallest_sufficient gives a face the smallest model at least "
                   "its size (the side of its aligned crop in output pixels, at the output scale), and the largest "
                   "model takes the faces larger than every model. Example: GPEN-BFR-512 + GPEN-BFR-2048 for a group "
                   "photo: the small faces restored fast by the 512, the big ones sharp by the 2048 (a small face "
                   "holds no detail the 2048 could add). Connect it where a GPEN model goes (GPEN Face Restore, "
                   "Restore Faces). Restore mode only: no Colorization or Inpainting model.")
    CATEGORY = CATEGORY
    FUNCTION = "combine"
    RETURN_TYPES = (GPEN_MODEL,)
    RETURN_NAMES = ("gpen_model",)
    OUTPUT_TOOLTIPS = ("The models as one GPEN model input: each face goes to the model of its size (each model is "
                       "loaded by ComfyUI when its faces come).",)

    @classmethod
    def INPUT_TYPES(cls):
        def model(which: str) -> tuple[str, dict]:
            return GPEN_MODEL, {"tooltip": f"From Load GPEN Model: {which} (sizes must differ: one model per size, "
                                           f"in any order)."}

        return {"required": {
            "model_1": model("a GPEN-BFR model"),
            "model_2": model("another GPEN-BFR model, of another size"),
            "model_routing": option_input(RestoreOptions, "model_routing", tooltip=(
                "smallest_sufficient: each face to the smallest model at least its size in the output (its aligned "
                "crop's side in output pixels); faces larger than every model to the largest. largest: every face to "
                "the largest model, as that model alone (to compare).")),
        }, "optional": {
            "model_3": model("optional, a third size"),
            "model_4": model("optional, a fourth size"),
        }}

    def combine(self, model_1: GPENModel, model_2: GPENModel, model_routing: str,
                model_3: GPENModel | None = None, model_4: GPENModel | None = None):
        """The set of the connected models (a set connected as a model gives its members), checked before any face is
        restored: restore-mode files only, one model per size (``ModelSet``'s message names the files)."""
        RestoreOptions(model_routing=model_routing)  # a rule the record knows (ValueError naming the choices)
        members = [m for given in (model_1, model_2, model_3, model_4) if given is not None for m in given.members]
        others = [(m.file_name, made_for(m.file_name)) for m in members if made_for(m.file_name) != "restore"]
        if others:
            named = ", ".join(f"{name} ({mode})" for name, mode in others)
            raise ValueError(f"a GPEN Model Set is for restore mode only (each face to the GPEN-BFR model of its "
                             f"size), but {named} looks like a model for another mode by its name: connect "
                             f"GPEN-BFR models, and a Colorization or Inpainting model alone to Restore Faces")
        ModelSet(models=tuple(cast(Any, m.patcher).model for m in members),  # sizes differ, 2 to 4 models
                 names=tuple(m.file_name for m in members))
        ordered: list[GPENModelHandle] = sorted(members, key=lambda m: m.size)
        return (GPENModelSetHandle(members=tuple(ordered), model_routing=model_routing),)
