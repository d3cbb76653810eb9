"""comfyui-gpen: GPEN face restoration for ComfyUI (the entry point ComfyUI imports).

Outside ComfyUI (no ``comfy`` module) this exports empty mappings instead of failing, so tools that import the
folder (pytest, linters) are not broken by it.
"""

import importlib.util
import logging

if importlib.util.find_spec("comfy") is not None and importlib.util.find_spec("folder_paths") is not None:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    logging.getLogger(__name__).info("comfyui-gpen: not running inside ComfyUI, no nodes registered")
    NODE_CLASS_MAPPINGS = {}
    NODE_DISPLAY_NAME_MAPPINGS = {}

#: the frontend extension ComfyUI serves: web/gpen_warnings.js shows the nodes' warnings as toasts
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
