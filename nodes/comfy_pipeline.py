"""The face pipeline inside ComfyUI: ``face_pipeline.pipeline.Pipeline`` with ``ComfyHost``, the pipeline's host
(``face_pipeline.protocols.Host``) on ComfyUI's model management: the detector's network and the GPEN model loaded
by ComfyUI, room made for the paste, progress bars, Cancel, notes shown as toasts.

A GPEN Model Set (``GPENModelSetHandle``) becomes the pipeline's ``ModelSet`` (its members' networks, named by their
files, with the set's ``model_routing``): the pipeline asks the host for each model when its faces come
(``model_for``), and ComfyUI loads that member's ModelPatcher, offloading others when it needs the room.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch

from ..face_pipeline.detection import FaceDetector
from ..face_pipeline.memory import MemoryPolicy
from ..face_pipeline.paste import PasteOptions, paste_bytes
from ..face_pipeline.paste.parsing import ParsingNet
from ..face_pipeline.pipeline import Pipeline, PipelineOptions
from ..face_pipeline.protocols import RestorationModel
from ..face_pipeline.restoration import ModelSet
from ..face_pipeline.types import FaceBatch
from . import comfy_bridge as bridge
from .handles import DetectorHandle, GPENModel, GPENModelHandle, GPENModelSetHandle


class ComfyHost:
    """The host of a node run, for a GPEN model handle (one model or a set) and a detector handle (either may be None
    for a step node)."""

    def __init__(self, *, gpen_model: GPENModel | None = None, face_detector: DetectorHandle | None = None) -> None:
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
        """``model`` (the handle's GPEN, or one member's of a set) loaded by ComfyUI with room for ``faces`` faces."""
        if self.gpen_model is None or model is None:  # a pipeline that only detects
            return model
        member = self._member(model)
        if faces == 0:  # nothing to restore: do not move the model to the GPU for it
            return _model_of(member)
        return cast(RestorationModel, bridge.model_on_device(member, faces))

    def _member(self, model: RestorationModel) -> GPENModelHandle:
        """The handle (of a set: the member) whose network ``model`` is: the pipeline asks for the networks it was
        built with (``comfy_pipeline``), the very objects inside the ModelPatchers."""
        if self.gpen_model is None:
            raise TypeError("a pipeline that restores is built with its GPEN model handle")
        member = next((m for m in self.gpen_model.members if _model_of(m) is model), None)
        if member is None:
            raise RuntimeError(f"the pipeline asked for a model that is not among {_names(self.gpen_model)}: a bug in "
                               f"nodes/comfy_pipeline.py, please report it")
        return member

    def _kept_for_paste(self, batch: FaceBatch) -> tuple[list, int]:
        """What a streamed restore and paste keeps loaded beside the paste: the ModelPatchers of the members that
        restore faces of ``batch`` (of a set, those its faces were routed to: ``FaceBatch.face_sizes``), and the
        bytes of the largest of their restore steps (the steps run one at a time, the paste between them).

        Every member in use stays loaded, not only the largest: the steps follow the faces' order, so a group photo
        alternates between the models, and a member offloaded to make room for the paste would be loaded again at
        each of its steps. Their weights are small beside a step's and the paste's working memory (GPEN-BFR-512 to
        2048 each hold about 71 M parameters: 0.14 GB in fp16), which ComfyUI frees around them; a member with no
        face is not loaded at all."""
        if not (batch.streamed and batch.num_faces and self.gpen_model is not None):
            return [], 0
        sides = [batch.side(face) for face in range(batch.num_faces)]
        used = [(m, sides.count(m.size)) for m in self.gpen_model.members if m.size in sides]
        return [m.patcher for m, _ in used], max((bridge.restore_step_bytes(m, count) for m, count in used),
                                                  default=0)

    def notify(self, message: str) -> None:
        """Shown in the frontend (a missing face index, no face found), not only logged."""
        bridge.warn_user(message)

    def prepare_paste(self, batch: FaceBatch, images: torch.Tensor, background: torch.Tensor | None,
                      protect: torch.Tensor | None, *, options: PasteOptions
                      ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, ParsingNet | None]:
        """ComfyUI makes room for the paste (and loads the parsing network it needs); everything on its device.
        A streamed batch (``restore_and_paste``: the faces are restored while the paste runs) keeps the GPEN model
        loaded beside it (of a set, each member with faces to restore: ``_kept_for_paste``), with room for one restore
        step, and no per-face masks (the all-in-one node keeps none)."""
        device = bridge.compute_device()
        keep, step = self._kept_for_paste(batch)
        needed = paste_bytes(batch, options=options, face_masks=not batch.streamed) + step
        parsing_net: ParsingNet | None = None
        if options.mask_type.startswith("parsing"):
            parsing_net = cast(ParsingNet, bridge.parsing_net_on_device(options.parsing_dir, memory_required=needed,
                                                                        keep=keep))
        else:
            bridge.load_on_device([], memory_required=needed, keep=keep)
        return (images.to(device), None if background is None else background.to(device),
                None if protect is None else protect.to(device), parsing_net)


def comfy_pipeline(*, gpen_model: GPENModel | None = None, face_detector: DetectorHandle | None = None,
                   options: PipelineOptions = PipelineOptions()) -> Pipeline:
    """The pipeline of a node: the handles' model (a set: a ``ModelSet`` of its members, named by their files, with
    the set's ``model_routing`` in ``options.restore``) and detector, ``options``, and ``ComfyHost``."""
    model: RestorationModel | ModelSet | None = None
    if isinstance(gpen_model, GPENModelSetHandle):
        model = ModelSet(models=tuple(_model_of(m) for m in gpen_model.members),
                         names=tuple(m.file_name for m in gpen_model.members))
        options = dataclasses.replace(options, restore=dataclasses.replace(options.restore,
                                                                           model_routing=gpen_model.model_routing))
    elif gpen_model is not None:
        model = _model_of(gpen_model)
    return Pipeline(model=model,
                    detector=cast(FaceDetector, face_detector.detector) if face_detector is not None else None,
                    options=options, host=ComfyHost(gpen_model=gpen_model, face_detector=face_detector))


def _model_of(handle: GPENModelHandle) -> RestorationModel:
    """The GPEN inside the handle's ModelPatcher, wherever it is now."""
    return cast(RestorationModel, cast(Any, handle.patcher).model)


def _names(handle: GPENModel) -> str:
    return ", ".join(m.file_name for m in handle.members)
