"""The seams of the face pipeline, as ``typing.Protocol``s: what it needs from its host (``Host``) and from a
restoration model (``RestorationModel``).

A host is the application the pipeline runs in: the CLI and the library (``host.LibraryHost``: PyTorch's and the
OS's memory figures, optional progress and cancel callables, log lines) or ComfyUI (``nodes/comfy_pipeline.py``:
its model management, progress bars, Cancel button and toasts). ``pipeline.Pipeline`` takes one host object, once;
nothing else of the host reaches the stages. A restoration model is a ``gpen_arch.GPEN`` or anything that keeps its
contract below (the tests' stand-ins do).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:  # types only: the protocols import nothing of the pipeline at run time
    from .detection import FaceDetector
    from .memory import MemoryPolicy
    from .paste.options import PasteOptions
    from .paste.parsing import ParsingNet
    from .types import FaceBatch

__all__ = ["Host", "ModelConfig", "RestorationModel"]


@runtime_checkable
class ModelConfig(Protocol):
    """What the pipeline reads of a model's configuration."""

    @property
    def size(self) -> int:
        """The side of the square crops the model takes and returns (256, 512, 1024, 2048 for GPEN)."""
        ...


@runtime_checkable
class RestorationModel(Protocol):
    """What the restore stage needs from a model (``restoration/restore.py``, ``restoration/batching.py``).

    ``config.size``: its crop side; ``model(x)``: ``[n, 3, S, S]`` in -1..1 in the model's dtype -> the same shape;
    ``parameters()``: where it is and in which dtype (the first parameter's device and dtype; none: CPU float32);
    ``estimate_memory(batch_size, dtype)``: peak activation bytes of one forward, for the batch size (a model
    without it is assumed to need about 50 full-size maps per face). Optional, used when present: ``between_blocks(
    hook)``, a context in which forwards call ``hook()`` between their blocks (so Cancel stops a long forward), and
    ``pending_weight_bytes(device)`` (bytes of the weights the model will derive on its first forward on a device
    and has not derived yet).
    """

    @property
    def config(self) -> ModelConfig: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...

    def estimate_memory(self, batch_size: int, dtype: torch.dtype | None = None) -> int: ...


@runtime_checkable
class Host(Protocol):
    """What the pipeline needs from the application it runs in.

    - ``memory``: free bytes on a device, whether an exception is an out-of-memory error, and cache release after
      one (``memory.MemoryPolicy``); restore batches and the paste are sized and retried by it.
    - ``check_interrupt()``: runs between stages, restore steps and, inside a GPEN forward, between its blocks; it
      raises to cancel (ComfyUI: its Cancel button). A host without Cancel does nothing.
    - ``progress(faces)``: the ``on_progress(done, total)`` callable of a restore of ``faces`` faces, or None.
    - ``detecting(detector)``: a context held while ``detector`` runs (ComfyUI: the detector's lock, its network
      loaded on the device by the model management).
    - ``model_for(model, faces)``: ``model`` where it should restore ``faces`` faces (ComfyUI: loaded with room for
      them; a library host returns it as it is).
    - ``prepare_paste(batch, images, background, protect, options=)``: the images, background and protect mask
      where the paste runs, and a loaded parsing network or None (the paste then loads it from
      ``options.parsing_dir``); ComfyUI makes room for the paste here.
    - ``notify(message)``: something that changes what the user gets without being an error (no face found, a face
      index that does not exist): logged by a library host, shown by one with a user interface.
    """

    @property
    def memory(self) -> MemoryPolicy: ...

    def check_interrupt(self) -> None: ...

    def progress(self, faces: int) -> Callable[[int, int], None] | None: ...

    def detecting(self, detector: FaceDetector | None) -> contextlib.AbstractContextManager: ...

    def model_for(self, model: RestorationModel | None, faces: int) -> RestorationModel | None: ...

    def prepare_paste(self, batch: FaceBatch, images: torch.Tensor, background: torch.Tensor | None,
                      protect: torch.Tensor | None, *, options: PasteOptions
                      ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, ParsingNet | None]: ...

    def notify(self, message: str) -> None: ...
