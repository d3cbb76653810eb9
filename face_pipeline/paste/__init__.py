"""Paste-back: soft masks, colour correction, output scaling, and compositing restored faces into the images.

``masks.py`` (analytic rounded-rectangle and ellipse masks), ``parsing.py`` (face-parsing masks from facexlib's
networks, configured from their tensors by ``parsenet_config.py``), ``official_mask.py`` (the official mask's
post-processing), ``color.py`` (colour correction, black-and-white images), ``scale.py`` (output scale),
``placement.py``
(where each face lands, its pixels and mask there, sampled in batches), ``compose.py`` (``paste_faces``: preparation
and compositing), ``budget.py`` (its memory estimate and out-of-memory fallback).
"""

from .budget import paste_bytes, paste_within_memory
from .color import gray_images, match_color, to_gray
from .compose import crop_masks, paste_faces
from .masks import ANALYTIC_MASKS, MASK_TYPES, ellipse_mask, mask_at, rounded_rect_mask
from .options import PasteOptions
from .parsing import (
    PARSING_FILES,
    ParsingNet,
    ParsingWeightsCorrupt,
    ParsingWeightsMissing,
    load_parsing_file,
    load_parsing_net,
    parsing_mask,
)
from .scale import SCALES, choose_scale, face_zoom

__all__ = ["MASK_TYPES", "SCALES", "ANALYTIC_MASKS", "paste_faces", "paste_within_memory", "paste_bytes",
           "gray_images", "to_gray", "choose_scale", "crop_masks", "face_zoom",
           "match_color", "mask_at", "rounded_rect_mask", "ellipse_mask", "parsing_mask", "PARSING_FILES", "ParsingNet",
           "load_parsing_net", "load_parsing_file", "ParsingWeightsCorrupt",
           "ParsingWeightsMissing", "PasteOptions"]
