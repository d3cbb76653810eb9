"""The face pipeline inside ComfyUI: ``face_pipeline.pipeline.Pipeline`` with ``ComfyHost``, the pipeline's host
(``face_pipeline.protocols.Host``) on ComfyUI's model management: the detector's network and the GPEN model loaded
by ComfyUI, room made for the paste, progress bars, Cancel, notes shown as toasts."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch

from ..face_pipeline.detection import FaceDetector
from ..face_pipeline.memory import MemoryPolicy
from ..face_pipeline.paste import PasteOptions, paste_bytes
from ..face_pipeline.paste.parsing import ParsingNet
from ..face_pipeline.pipeline import Pipeline, PipelineOptions
from ..face_pipeline.protocols import RestorationModel
from ..face_pipeline.types import FaceBatch
from . import comfy_bridge as bridge
from .handles import DetectorHandle, GPENModelHandle


class ComfyHost:
    """The host of a node run, for a GPEN model handle and a detector handle (either may be None for a step node)."""

    def __init__(self, *, gpen_model: GPENModelHandle | None = None,
                 face_detector: DetectorHandle | None = None) -> None:
        self.gpen_model, self.face_detector = gpen_model, face_detector

    @property
    def memory(self) -> MemoryPolicy:
        """ComfyUI's free memory and out-of-memory rules (it may offload other models)."""
        return bridge.MEMORY

    @staticmethod
    def check_interrupt() -> None:
        """ComfyUI's Cancel: raises when the user asked to stop."""
        bridge.Progress.check_interrupt()

    def progress(self, faces: int) -> Callable[[int, int], None]:
        """A ComfyUI progress bar of ``faces`` steps."""
        return bridge.Progress(faces)

    @contextlib.contextmanager
    def detecting(self, detector: FaceDetector | None) -> Iterator[None]:
        """One detection at a time per detector, its network loaded by ComfyUI."""
        if self.face_detector is None:
            raise TypeError("a pipeline that detects is built with its detector handle")
        with self.face_detector.lock:
            bridge.load_on_device([self.face_detector.patcher])
            yield

    def model_for(self, model: RestorationModel | None, faces: int) -> RestorationModel | None:
        """The GPEN model loaded by ComfyUI with room for ``faces`` faces."""
        if self.gpen_model is None:  # a pipeline that only detects
            return model
        if faces == 0:  # nothing to restore: do not move the model to the GPU for it
            return _model_of(self.gpen_model)
        return cast(RestorationModel, bridge.model_on_device(self.gpen_model, faces))

    def notify(self, message: str) -> None:
        """Shown in the frontend (a missing face index, no face found), not only logged."""
        bridge.warn_user(message)

    def prepare_paste(self, batch: FaceBatch, images: torch.Tensor, background: torch.Tensor | None,
                      protect: torch.Tensor | None, *, options: PasteOptions
                      ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, ParsingNet | None]:
        """ComfyUI makes room for the paste (and loads the parsing network it needs); everything on its device.
        A streamed batch (``restore_and_paste``: the faces are restored while the paste runs) keeps the GPEN model
        loaded beside it, with room for one restore step, and no per-face masks (the all-in-one node keeps none)."""
        device = bridge.compute_device()
        needed = paste_bytes(batch, options=options, face_masks=not batch.streamed)
        keep = []
        if batch.streamed and batch.num_faces and self.gpen_model is not None:
            keep = [self.gpen_model.patcher]
            needed += bridge.restore_step_bytes(self.gpen_model, batch.num_faces)
        parsing_net: ParsingNet | None = None
        if options.mask_type.startswith("parsing"):
            parsing_net = cast(ParsingNet, bridge.parsing_net_on_device(options.parsing_dir, memory_required=needed,
                                                                        keep=keep))
        else:
            bridge.load_on_device([], memory_required=needed, keep=keep)
        return (images.to(device), None if background is None else background.to(device),
                None if protect is None else protect.to(device), parsing_net)


def comfy_pipeline(*, gpen_model: GPENModelHandle | None = None, face_detector: DetectorHandle | None = None,
                   options: PipelineOptions = PipelineOptions()) -> Pipeline:
    """The pipeline of a node: the handles' model and detector, ``options``, and ``ComfyHost``."""
    return Pipeline(model=_model_of(gpen_model) if gpen_model is not None else None,
                    detector=cast(FaceDetector, face_detector.detector) if face_detector is not None else None,
                    options=options, host=ComfyHost(gpen_model=gpen_model, face_detector=face_detector))


def _model_of(handle: GPENModelHandle) -> RestorationModel:
    """The GPEN inside the handle's ModelPatcher, wherever it is now."""
    return cast(RestorationModel, cast(Any, handle.patcher).model)
