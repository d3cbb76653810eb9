"""``LibraryHost``: the pipeline's host for the CLI, the library and the tests (``protocols.Host``).

Memory figures from PyTorch and the OS (``memory.DEFAULT_MEMORY``, or a ``MemoryPolicy`` of the caller's), optional
``on_progress(done, total)`` and ``interrupt()`` callables, models and detectors used where they are, notes logged.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .detection import FaceDetector
from .memory import DEFAULT_MEMORY, MemoryPolicy
from .paste.options import PasteOptions
from .paste.parsing import ParsingNet
from .protocols import RestorationModel
from .types import FaceBatch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LibraryHost:
    """A host without model management: ``memory`` decides free memory and out-of-memory errors;
    ``on_progress(done, total)`` counts restored faces; ``interrupt()`` runs at every cancel point (it may raise)."""

    memory: MemoryPolicy = DEFAULT_MEMORY
    on_progress: Callable[[int, int], None] | None = None
    interrupt: Callable[[], None] | None = None

    def check_interrupt(self) -> None:
        if self.interrupt is not None:
            self.interrupt()

    def progress(self, faces: int) -> Callable[[int, int], None] | None:
        return self.on_progress

    def detecting(self, detector: FaceDetector | None) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def model_for(self, model: RestorationModel | None, faces: int) -> RestorationModel | None:
        return model

    def prepare_paste(self, batch: FaceBatch, images: torch.Tensor, background: torch.Tensor | None,
                      protect: torch.Tensor | None, *, options: PasteOptions
                      ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, ParsingNet | None]:
        return images, background, protect, None

    def notify(self, message: str) -> None:
        """Logged at info level (the CLI reports per file itself)."""
        logger.info(message)


DEFAULT_HOST = LibraryHost()
