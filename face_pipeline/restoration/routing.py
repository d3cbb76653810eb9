"""Model routing: with several GPEN models at once (a ``ModelSet``), each face is restored by the model that fits
its size.

A face's size is the side, in output pixels, of the square its aligned crop covers: the crop side the alignment
computes (``S / zoom`` image pixels for a crop of side ``S`` whose image -> crop matrix scales by ``zoom``; the same
for every ``S``, as the templates scale with the crop) times the output scale. A 40-pixel face holds no detail that a
512 model cannot give, and the largest models invent the most, so the rule ``smallest_sufficient`` (the default)
gives each face the smallest model whose size is at least the face's size, and the largest model the faces larger
than every model; ``largest`` gives every face the largest model (one model's behaviour).

The output scale is fixed before routing (``auto``: chosen for the largest model, as with that model alone), so a
face routed to a smaller model is pasted at the scale the largest model's faces are. Routing is restore mode only:
a colorize or inpaint generator is one model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .options import ROUTING_RULES
from .restore import model_size

MAX_MODELS = 4  # models in one set: the four GPEN-BFR sizes


@dataclass(frozen=True)
class ModelSet:
    """Several restoration models of different sizes (``protocols.RestorationModel``), smallest first, with the
    names the user knows them by (file names; default ``GPEN-<size>``). One model is a set of one."""

    models: tuple
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        models = tuple(self.models)
        if not 1 <= len(models) <= MAX_MODELS:
            raise ValueError(f"a model set holds 1 to {MAX_MODELS} models, got {len(models)}")
        names = tuple(self.names) or tuple(f"GPEN-{model_size(m)}" for m in models)
        if len(names) != len(models):
            raise ValueError(f"a model set needs one name per model: {len(models)} models, {len(names)} names")
        sizes = [model_size(m) for m in models]
        if len(set(sizes)) != len(sizes):
            twice = sorted({s for s in sizes if sizes.count(s) > 1})
            raise ValueError(f"the models of a set must differ in size (each face goes to the model of its size), "
                             f"but {', '.join(n for n, s in zip(names, sizes) if s in twice)} are all "
                             f"{'/'.join(map(str, twice))}: give one model per size")
        order = sorted(range(len(models)), key=lambda i: sizes[i])
        object.__setattr__(self, "models", tuple(models[i] for i in order))
        object.__setattr__(self, "names", tuple(names[i] for i in order))

    @classmethod
    def of(cls, model) -> ModelSet:
        """``model`` as a set: a ``ModelSet`` as it is, one model as a set of one."""
        return model if isinstance(model, ModelSet) else cls(models=(model,))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(model_size(m) for m in self.models)

    @property
    def largest(self):
        return self.models[-1]

    def name_of(self, size: int) -> str:
        """The name of the set's model of ``size``."""
        return self.names[self.sizes.index(size)]


def output_sides(affines: torch.Tensor, *, size: int, scale: int) -> list[float]:
    """Per face, the side in output pixels of the square its aligned crop covers: ``affines`` ``[F, 2, 3]`` (image
    -> crop of side ``size``), at output ``scale``."""
    matrices = affines.detach().cpu().double().numpy()
    return [size / math.sqrt(abs(float(np.linalg.det(m[:, :2])))) * scale for m in matrices]


def route(sides: Sequence[float], sizes: Sequence[int], rule: str) -> tuple[int, ...]:
    """Per face of output side ``sides[i]``, the model size of ``sizes`` (a set's sizes) that restores it: with
    ``smallest_sufficient`` the smallest at least the face's side (the largest when none is), with ``largest`` the
    largest."""
    if rule not in ROUTING_RULES:
        raise ValueError(f"unknown model routing {rule!r}; choose one of {', '.join(ROUTING_RULES)}")
    ordered = sorted(sizes)
    if rule == "largest":
        return tuple(ordered[-1] for _ in sides)
    return tuple(next((s for s in ordered if s >= side - 1e-6), ordered[-1]) for side in sides)
