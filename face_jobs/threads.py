"""The CPU thread count of a file job: one setting for the local engine and for every Ray worker.

On the CPU the pixels depend on the number of threads: some kernels split their work by thread, and where a split
falls changes a float rounding (measured: oneDNN's 1x1 convolutions, the GPEN ToRGB and first encoder layer, and
ATen's bilinear upsampling of the ToRGB skip image; RetinaFace's oneDNN convolutions of every kind; docs/performance.md
"Thread count and the same bytes"). A face restored with 1 and with 2 threads differs by about 1e-7 in float, which
moves a few output levels by 1-2 (of 255). So both engines compute with the same count, ``--threads`` (default
``DEFAULT_THREADS``), and a Ray worker reserves that many CPUs. The GPU's pixels do not depend on it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

logger = logging.getLogger(__name__)

#: the default: the Ray workers' count (one CPU reserved each), so the two engines give the same bytes by default
DEFAULT_THREADS = 1
MAX_THREADS = 1024


def check_threads(threads: int) -> int:
    """``threads`` when it is a whole number in 1..``MAX_THREADS``; ``ValueError`` saying so otherwise."""
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"the thread count must be a whole number in 1..{MAX_THREADS}, got {threads!r}")
    return threads


def set_cpu_threads(threads: int) -> tuple[int, int]:
    """Compute with ``threads`` CPU threads in this process: PyTorch's intra-op pool and OpenCV's (decoding,
    resizing, the OpenCV YuNet detector). Returns the previous ``(torch, opencv)`` counts."""
    import cv2

    check_threads(threads)
    previous = (torch.get_num_threads(), cv2.getNumThreads())
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    logger.debug("computing with %d CPU thread(s)", threads)
    return previous


@contextlib.contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """``with cpu_threads(n):`` compute with ``n`` threads (``set_cpu_threads``), the previous counts restored
    afterwards (a command line run inside another program, or a test, leaves its process as it found it)."""
    import cv2

    torch_threads, cv2_threads = set_cpu_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        cv2.setNumThreads(cv2_threads)
