"""The face pipeline inside ComfyUI: ``face_pipeline.pipeline.Pipeline`` with its hooks on ComfyUI's model management
(the detector's network and the GPEN model loaded by ComfyUI, room made for the paste, progress bars, Cancel)."""

from __future__ import annotations

import contextlib

import torch

from ..face_pipeline.paste import paste_bytes
from ..face_pipeline.pipeline import Pipeline, PipelineOptions
from . import comfy_bridge as bridge


class ComfyPipeline(Pipeline):
    """A ``Pipeline`` for a GPEN model handle and a detector handle (either may be None for a step node)."""

    def __init__(self, *, gpen_model=None, face_detector=None, options: PipelineOptions = PipelineOptions()):
        super().__init__(model=gpen_model.patcher.model if gpen_model is not None else None,
                         detector=face_detector.detector if face_detector is not None else None, options=options,
                         memory=bridge.MEMORY, check_interrupt=bridge.Progress.check_interrupt)
        self.gpen_model, self.face_detector = gpen_model, face_detector

    @contextlib.contextmanager
    def detecting(self):
        """One detection at a time per detector, its network loaded by ComfyUI."""
        with self.face_detector.lock:
            bridge.load_on_device([self.face_detector.patcher])
            yield

    def model_for(self, faces: int) -> torch.nn.Module:
        if faces == 0:  # nothing to restore: do not move the model to the GPU for it
            return self.gpen_model.patcher.model
        return bridge.model_on_device(self.gpen_model, faces)

    def progress_for(self, faces: int):
        return bridge.Progress(faces)

    def notify(self, message: str) -> None:
        """Shown in the frontend (a missing face index, no face found), not only logged."""
        bridge.warn_user(message)

    def prepare_paste(self, batch, images, background, protect):
        """ComfyUI makes room for the paste (and loads the parsing network it needs); everything on its device.
        A streamed batch (``restore_and_paste``: the faces are restored while the paste runs) keeps the GPEN model
        loaded beside it, with room for one restore step, and no per-face masks (the all-in-one node keeps none)."""
        device = bridge.compute_device()
        needed = paste_bytes(batch, options=self.options.paste, face_masks=not batch.streamed)
        keep = []
        if batch.streamed and batch.num_faces and self.gpen_model is not None:
            keep = [self.gpen_model.patcher]
            needed += bridge.restore_step_bytes(self.gpen_model, batch.num_faces)
        parsing_net = None
        if self.options.paste.mask_type.startswith("parsing"):
            parsing_net = bridge.parsing_net_on_device(self.options.paste.parsing_dir, memory_required=needed,
                                                       keep=keep)
        else:
            bridge.load_on_device([], memory_required=needed, keep=keep)
        return (images.to(device), None if background is None else background.to(device),
                None if protect is None else protect.to(device), parsing_net)
