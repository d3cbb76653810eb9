"""Restoration: aligned crops through a GPEN model (duck-typed: ``.config.size``, RGB in [-1, 1]).

``restore.py`` (``restore_faces``), ``batching.py`` (batch size from free memory and the progress step),
``modes.py`` (what restore / colorize / inpaint feed the model and keep of its output), ``masks.py`` (inpainting
masks from image space into crop space), ``routing.py`` (several models: each face to the model of its size).
"""

from ..errors import RestoreError, RestoreOutOfMemory
from ..memory import DEFAULT_MEMORY, MemoryPolicy, free_memory_bytes, is_out_of_memory
from .batching import auto_batch_size, bytes_per_face
from .masks import masks_in_crop_space
from .modes import RESTORE_MODES
from .options import RestoreOptions
from .restore import model_device_dtype, model_size, restore_faces
from .routing import ROUTING_RULES, ModelSet, output_sides, route

__all__ = ["RESTORE_MODES", "RestoreOptions", "restore_faces", "model_size", "model_device_dtype",
           "masks_in_crop_space", "auto_batch_size", "bytes_per_face", "free_memory_bytes", "is_out_of_memory",
           "MemoryPolicy", "DEFAULT_MEMORY", "RestoreError", "RestoreOutOfMemory", "ModelSet", "ROUTING_RULES",
           "output_sides", "route"]
