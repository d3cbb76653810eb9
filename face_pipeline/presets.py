"""Named sets of option values: a preset is data (field name -> value over the stages' records), never a fork of
the code. ``official`` reproduces the official GPEN ``FaceEnhancement.process`` (yangxy/GPEN ``face_enhancement.py``)
given the same faces: GPEN template, bilinear warps, 8-bit intermediates (crops rounded, the model's output
truncated, warped-back faces rounded), the parse mask with hair and the official post-processing, the small-face
blur, no colour correction, no black-and-white rule, scale 1, faces in detector-score order (the earlier face keeps
a pixel on a tie of masks). ``strength`` is the official ``alpha`` and stays the caller's. ``official_rect`` is the
same with the mask the official post-processing gives an all-face parse (no parser weights needed).
docs/official_parity.md lists every difference from the defaults and what each changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .options import STAGES, PipelineOptions

OFFICIAL: Mapping[str, Any] = MappingProxyType({
    "sort_by": "score",
    "template": "gpen",
    "fit_precision": "float32",
    "crop_interpolation": "bilinear",
    "round_crops": True,
    "truncate_restored": True,
    "mask_type": "parsing_official",
    "color_correction": False,
    "keep_gray": False,
    "scale": 1,
    "paste_interpolation": "bilinear",
    "round_pasted": True,
    "small_face_blur": 100.0,
    "round_output": True,
})

PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "official": OFFICIAL,
    "official_rect": MappingProxyType({**OFFICIAL, "mask_type": "rect_official"}),
})


def preset_values(name: str) -> dict[str, Any]:
    """The field values of preset ``name``; ``ValueError`` naming the presets for another name."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def apply_preset(options: PipelineOptions, name: str | None, *, keep: frozenset[str] | set[str] = frozenset()
                 ) -> PipelineOptions:
    """``options`` with the fields of preset ``name`` set (``None`` or ``"none"``: unchanged), except the fields in
    ``keep`` (options the user gave explicitly: they override the preset)."""
    if name is None or name == "none":
        return options
    values = {k: v for k, v in preset_values(name).items() if k not in keep}
    replaced = {}
    for stage, record in STAGES.items():
        names = {f.name for f in dataclasses.fields(record)}
        mine = {k: v for k, v in values.items() if k in names}
        if mine:
            replaced[stage] = dataclasses.replace(getattr(options, stage), **mine)
    return dataclasses.replace(options, **replaced)
