"""How many faces to send through the model at once, and what to do when memory runs out.

The batch size is ``usable free memory // estimated bytes per face``:
- free memory: ``torch.cuda.mem_get_info`` on CUDA (what the driver reports free, plus what PyTorch's caching
  allocator holds but does not use), ``MemAvailable`` from /proc/meminfo on the CPU (else the available physical
  pages from ``os.sysconf``, else 4 GiB), on MPS the recommended working set minus what the driver already holds;
- usable: 80% of that (other allocations, fragmentation), less the derived weights the model still has to build;
- per face: the model's own ``estimate_memory(1, dtype)`` (peak activation bytes of one forward, gpen_arch/memory.py)
  plus the face's input and output copies.
On out-of-memory the batch is halved and retried down to 1.

Where the numbers come from is a ``MemoryPolicy``: ``DEFAULT_MEMORY`` asks PyTorch and the OS as above; a host
application with its own memory manager (ComfyUI: nodes/comfy_bridge.py) passes its own, so every decision about
free memory, out-of-memory errors and cache release goes through one place.

Batches are also cut into steps for progress and cancel: ``faces_per_step`` faces per forward at most (one on the
CPU, where the network runs face by face anyway; a few on a GPU), so a progress bar moves per face and a cancel
takes effect within about one face's forward.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

USABLE_FRACTION = 0.8
GPU_FACES_PER_STEP = 4  # faces per forward on an accelerator: progress and cancel stay within a few faces


def free_memory_bytes(device: torch.device) -> int:
    """Bytes free for new tensors on ``device`` (see the module doc for where the number comes from)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        reserved_unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(reserved_unused, 0))
    if device.type == "mps":
        try:
            return max(int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()), 0)
        except (AttributeError, RuntimeError):
            return 4 << 30
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def bytes_per_face(model: torch.nn.Module, size: int, dtype: torch.dtype) -> int:
    """Estimated peak bytes one more face adds to a forward at ``size`` in ``dtype`` (activations and copies)."""
    element = dtype.itemsize
    io = 2 * 3 * size * size * (element + 4)  # input and output, in the model's dtype and float32
    estimate = getattr(model, "estimate_memory", None)
    if estimate is None:  # not a GPEN: assume ~50 full-size float maps
        return io + 50 * 3 * size * size * element
    return int(estimate(1, dtype)) + io


def pending_weight_bytes(model: torch.nn.Module, device: torch.device) -> int:
    """Bytes of derived weights (folded blurs, gpen_arch/weight_cache.py) the model will build on its first forward
    on ``device`` and has not built yet: they come out of the same free memory as the batch."""
    total = getattr(model, "derived_weight_bytes", None)
    cache = getattr(model, "derived_weights", None)
    if total is None or cache is None:
        return 0
    return max(int(total(device)) - cache.nbytes(), 0)


def faces_per_step(device: torch.device) -> int:
    """The most faces one forward takes, for progress and cancel granularity (see the module doc)."""
    return 1 if device.type == "cpu" else GPU_FACES_PER_STEP


def auto_batch_size(model: torch.nn.Module, *, size: int, dtype: torch.dtype, device: torch.device,
                    faces: int, memory: "MemoryPolicy | None" = None) -> int:
    """The largest batch (1..``faces_per_step``, at most ``faces``) that the memory estimate says fits."""
    memory = memory or DEFAULT_MEMORY
    per_face = bytes_per_face(model, size, dtype)
    free = memory.free_bytes(device)
    fits = int(max(free * USABLE_FRACTION - pending_weight_bytes(model, device), 0) // max(per_face, 1))
    batch = max(1, min(fits, faces_per_step(device), max(faces, 1)))
    logger.debug("batch size %d: %.0f MiB per face, %.0f MiB free on %s", batch, per_face / 2**20, free / 2**20,
                 device)
    return batch


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA's ``OutOfMemoryError``, Python's ``MemoryError`` and the RuntimeErrors PyTorch raises when an
    allocation fails ("... out of memory ...", the CPU's "DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc)
    return "out of memory" in text.lower() or "DefaultCPUAllocator" in text or "can't allocate memory" in text


def release_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


@dataclass(frozen=True)
class MemoryPolicy:
    """Where memory decisions come from: ``free_bytes(device)`` (bytes free for new tensors), ``is_oom(exc)``
    (does this exception mean an allocation failed), ``release(device)`` (return cached memory after one)."""

    free_bytes: Callable[[torch.device], int] = free_memory_bytes
    is_oom: Callable[[BaseException], bool] = is_out_of_memory
    release: Callable[[torch.device], None] = release_cached_memory


DEFAULT_MEMORY = MemoryPolicy()
