"""The ComfyUI nodes of comfyui-gpen: thin wrappers around face_pipeline and gpen_arch."""

from __future__ import annotations

from .all_in_one import GPENFaceRestore
from .comfy_bridge import register_model_folders
from .detection_nodes import GPENDetectFaces, GPENFacesFromJSON
from .model_nodes import GPENLoadFaceDetector, GPENLoadModel, GPENModelSet
from .paste_nodes import GPENPasteFaces
from .restore_nodes import GPENRestoreFaces

register_model_folders()

NODE_CLASS_MAPPINGS = {
    "GPENLoadModel": GPENLoadModel,
    "GPENLoadFaceDetector": GPENLoadFaceDetector,
    "GPENDetectFaces": GPENDetectFaces,
    "GPENRestoreFaces": GPENRestoreFaces,
    "GPENPasteFaces": GPENPasteFaces,
    "GPENFaceRestore": GPENFaceRestore,
    "GPENFacesFromJSON": GPENFacesFromJSON,
    "GPENModelSet": GPENModelSet,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "GPENLoadModel": "Load GPEN Model",
    "GPENLoadFaceDetector": "Load Face Detector (GPEN)",
    "GPENDetectFaces": "Detect Faces (GPEN)",
    "GPENRestoreFaces": "Restore Faces (GPEN)",
    "GPENPasteFaces": "Paste Faces (GPEN)",
    "GPENFaceRestore": "GPEN Face Restore",
    "GPENFacesFromJSON": "Faces from JSON (GPEN)",
    "GPENModelSet": "GPEN Model Set",
}
