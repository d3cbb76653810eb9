"""Memory decisions of the whole pipeline in one place: how many bytes are free on a device, whether an exception
means an allocation failed, how to return cached memory afterwards.

``DEFAULT_MEMORY`` asks PyTorch and the OS: ``torch.cuda.mem_get_info`` on CUDA (what the driver reports free, plus
what PyTorch's caching allocator holds but does not use), ``MemAvailable`` from /proc/meminfo on the CPU (else the
available physical pages from ``os.sysconf``, else 4 GiB), on MPS the recommended working set minus what the driver
already holds. A host application with its own memory manager passes its own ``MemoryPolicy`` (ComfyUI's:
nodes/comfy_bridge.py), so it sees and decides everything, including which of its other models to offload.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch


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


#: what PyTorch's allocators say, besides "out of memory" (any case), when an allocation fails
_OOM_MARKS = ("DefaultCPUAllocator", "can't allocate memory", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA's ``OutOfMemoryError``, Python's ``MemoryError`` and the RuntimeErrors PyTorch raises when an
    allocation fails ("... out of memory ...", the CPU's "DefaultCPUAllocator: can't allocate memory", "not enough
    memory" on Windows and MPS). The one test of the pack: the pipeline's and the batch jobs'."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc)
    return any(mark in text for mark in _OOM_MARKS) or "out of memory" in text.lower()


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
