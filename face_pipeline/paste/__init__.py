"""Paste-back: soft masks, colour correction, output scaling, and compositing restored faces into the images."""

from .compose import MASK_TYPES, SCALES, choose_scale, crop_masks, face_zoom, paste_faces
from .color import match_color
from .masks import ellipse_mask, rounded_rect_mask
from .parsing import PARSING_FILES, ParsingWeightsMissing, parsing_mask

__all__ = ["MASK_TYPES", "SCALES", "paste_faces", "choose_scale", "crop_masks", "face_zoom", "match_color",
           "rounded_rect_mask", "ellipse_mask", "parsing_mask", "PARSING_FILES", "ParsingWeightsMissing"]
