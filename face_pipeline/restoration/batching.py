"""How many faces to send through the model at once, and what to do when memory runs out.

The batch size is ``usable free memory // estimated bytes per face``:
- free memory: from the ``MemoryPolicy`` (``face_pipeline/memory.py``: PyTorch and the OS by default, ComfyUI's
  model management inside ComfyUI);
- usable: 80% of that (other allocations, fragmentation), less the derived weights the model still has to build;
- per face: the model's own ``estimate_memory(1, dtype)`` (peak activation bytes of one forward,
  gpen_arch/runtime/memory.py) plus the face's input and output copies.
On out-of-memory the batch is halved and retried down to 1.

Batches are also cut into steps for progress and cancel: ``faces_per_step`` faces per forward at most (one on the
CPU, where the network runs face by face anyway; a few on a GPU), so a progress bar moves per face and a cancel
takes effect within about one face's forward.
"""

from __future__ import annotations

import logging

import torch

from ..memory import DEFAULT_MEMORY, MemoryPolicy
from ..protocols import RestorationModel

logger = logging.getLogger(__name__)

USABLE_FRACTION = 0.8
GPU_FACES_PER_STEP = 4  # faces per forward on an accelerator: progress and cancel stay within a few faces


def bytes_per_face(model: RestorationModel, size: int, dtype: torch.dtype) -> int:
    """Estimated peak bytes one more face adds to a forward at ``size`` in ``dtype`` (activations and copies)."""
    element = dtype.itemsize
    io = 2 * 3 * size * size * (element + 4)  # input and output, in the model's dtype and float32
    estimate = getattr(model, "estimate_memory", None)
    if estimate is None:  # not a GPEN: assume ~50 full-size float maps
        return io + 50 * 3 * size * size * element
    return int(estimate(1, dtype)) + io


def pending_weight_bytes(model: RestorationModel, device: torch.device) -> int:
    """Bytes of derived weights the model will build on its first forward on ``device`` and has not built yet (its
    optional ``pending_weight_bytes``, see ``RestorationModel``): they come out of the same free memory as the
    batch."""
    pending = getattr(model, "pending_weight_bytes", None)
    return 0 if pending is None else int(pending(device))


def faces_per_step(device: torch.device) -> int:
    """The most faces one forward takes, for progress and cancel granularity (see the module doc)."""
    return 1 if device.type == "cpu" else GPU_FACES_PER_STEP


def auto_batch_size(model: RestorationModel, *, size: int, dtype: torch.dtype, device: torch.device,
                    faces: int, memory: MemoryPolicy = DEFAULT_MEMORY) -> int:
    """The largest batch (1..``faces_per_step``, at most ``faces``) that the memory estimate says fits."""
    per_face = bytes_per_face(model, size, dtype)
    free = memory.free_bytes(device)
    fits = int(max(free * USABLE_FRACTION - pending_weight_bytes(model, device), 0) // max(per_face, 1))
    batch = max(1, min(fits, faces_per_step(device), max(faces, 1)))
    logger.debug("batch size %d: %.0f MiB per face, %.0f MiB free on %s", batch, per_face / 2**20, free / 2**20,
                 device)
    return batch


