"""Paste-back: soft masks, colour correction, output scaling, and compositing restored faces into the images.

``masks.py`` (analytic rounded-rectangle and ellipse masks), ``parsing.py`` (face-parsing masks from facexlib's
networks), ``color.py`` (colour correction), ``scale.py`` (output scale), ``compose.py`` (``paste_faces``).
"""

from .color import match_color
from .compose import MASK_TYPES, crop_masks, paste_faces
from .masks import ANALYTIC_MASKS, ellipse_mask, mask_at, rounded_rect_mask
from .parsing import PARSING_FILES, ParsingWeightsMissing, parsing_mask
from .scale import SCALES, choose_scale, face_zoom

__all__ = ["MASK_TYPES", "SCALES", "ANALYTIC_MASKS", "paste_faces", "choose_scale", "crop_masks", "face_zoom",
           "match_color", "mask_at", "rounded_rect_mask", "ellipse_mask", "parsing_mask", "PARSING_FILES",
           "ParsingWeightsMissing"]
