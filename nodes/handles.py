"""The custom socket types the pack passes between its nodes, and what travels in them."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from ..gpen_arch import GPEN

GPEN_MODEL = "GPEN_MODEL"
GPEN_FACE_DETECTOR = "GPEN_FACE_DETECTOR"
GPEN_FACES = "GPEN_FACES"  # a face_pipeline.types.FaceBatch


class ModelPatcherLike(Protocol):
    """What the nodes use of ComfyUI's ``comfy.model_patcher.ModelPatcher`` (and of its test double)."""

    model: GPEN
    load_device: torch.device


@dataclass(frozen=True)
class GPENModelHandle:
    """A loaded GPEN wrapped in ComfyUI's ModelPatcher (so ComfyUI loads and offloads it with everything else)."""

    patcher: ModelPatcherLike  # comfy.model_patcher.ModelPatcher around a gpen_arch.GPEN
    file_name: str
    size: int
    dtype: torch.dtype  # the weights were cast to it

    @property
    def members(self) -> tuple[GPENModelHandle, ...]:
        """The models this handle restores with: itself (``GPENModelSetHandle``: its models)."""
        return (self,)

    @property
    def largest(self) -> GPENModelHandle:
        return self


@dataclass(frozen=True)
class GPENModelSetHandle:
    """Several GPEN models of different sizes (the GPEN Model Set node), travelling in the same ``GPEN_MODEL`` socket
    as one model: each face is restored by the model that fits its size in the output
    (``face_pipeline.restoration.routing``, with ``model_routing``). Each member keeps its own ModelPatcher, so
    ComfyUI loads each model when its faces come and may offload it between."""

    members: tuple[GPENModelHandle, ...]  # 2 to 4 models of different sizes, smallest first
    model_routing: str  # RestoreOptions.model_routing: "smallest_sufficient" or "largest"

    @property
    def largest(self) -> GPENModelHandle:
        return self.members[-1]

    @property
    def file_names(self) -> str:
        """The members' file names, for messages."""
        return ", ".join(member.file_name for member in self.members)


#: what a ``GPEN_MODEL`` socket carries: one model, or a set of them
GPENModel = GPENModelHandle | GPENModelSetHandle


@dataclass(frozen=True)
class DetectorHandle:
    """A face detector (its name and options are its own: ``detector.name``) under ComfyUI's model management."""

    detector: object = field(repr=False)  # face_pipeline.detection.FaceDetector
    patcher: object = field(default=None, repr=False)  # ModelPatcher of its network (None: OpenCV)
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)
