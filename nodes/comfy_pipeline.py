"""The face pipeline inside ComfyUI: ``face_pipeline.pipeline.Pipeline`` with ``ComfyHost``, the pipeline's host
(``face_pipeline.protocols.Host``) on ComfyUI's model management: the detector's network and the GPEN model loaded
by ComfyUI, room made for the paste, progress bars, Cancel, notes shown as toasts."""

from __future__ import annotations

import contextlib

import torch

from ..face_pipeline.paste import paste_bytes
from ..face_pipeline.pipeline import Pipeline, PipelineOptions
from . import comfy_bridge as bridge


class ComfyHost:
    """The host of a node run, for a GPEN model handle and a detector handle (either may be None for a step node)."""

    def __init__(self, *, gpen_model=None, face_detector=None) -> None:
        self.gpen_model, self.face_detector = gpen_model, face_detector

    @property
    def memory(self):
        """ComfyUI's free memory and out-of-memory rules (it may offload other models)."""
        return bridge.MEMORY

    @staticmethod
    def check_interrupt() -> None:
        """ComfyUI's Cancel: raises when the user asked to stop."""
        bridge.Progress.check_interrupt()

    def progress(self, faces: int):
        """A ComfyUI progress bar of ``faces`` steps."""
        return bridge.Progress(faces)

    @contextlib.contextmanager
    def detecting(self, detector):
        """One detection at a time per detector, its network loaded by ComfyUI."""
        with self.face_detector.lock:
            bridge.load_on_device([self.face_detector.patcher])
            yield

    def model_for(self, model, faces: int) -> torch.nn.Module:
        """The GPEN model loaded by ComfyUI with room for ``faces`` faces."""
        if faces == 0:  # nothing to restore: do not move the model to the GPU for it
            return self.gpen_model.patcher.model
        return bridge.model_on_device(self.gpen_model, faces)

    def notify(self, message: str) -> None:
        """Shown in the frontend (a missing face index, no face found), not only logged."""
        bridge.warn_user(message)

    def prepare_paste(self, batch, images, background, protect, *, options):
        """ComfyUI makes room for the paste (and loads the parsing network it needs); everything on its device.
        A streamed batch (``restore_and_paste``: the faces are restored while the paste runs) keeps the GPEN model
        loaded beside it, with room for one restore step, and no per-face masks (the all-in-one node keeps none)."""
        device = bridge.compute_device()
        needed = paste_bytes(batch, options=options, face_masks=not batch.streamed)
        keep = []
        if batch.streamed and batch.num_faces and self.gpen_model is not None:
            keep = [self.gpen_model.patcher]
            needed += bridge.restore_step_bytes(self.gpen_model, batch.num_faces)
        parsing_net = None
        if options.mask_type.startswith("parsing"):
            parsing_net = bridge.parsing_net_on_device(options.parsing_dir, memory_required=needed, keep=keep)
        else:
            bridge.load_on_device([], memory_required=needed, keep=keep)
        return (images.to(device), None if background is None else background.to(device),
                None if protect is None else protect.to(device), parsing_net)


def comfy_pipeline(*, gpen_model=None, face_detector=None, options: PipelineOptions = PipelineOptions()) -> Pipeline:
    """The pipeline of a node: the handles' model and detector, ``options``, and ``ComfyHost``."""
    return Pipeline(model=gpen_model.patcher.model if gpen_model is not None else None,
                    detector=face_detector.detector if face_detector is not None else None, options=options,
                    host=ComfyHost(gpen_model=gpen_model, face_detector=face_detector))
