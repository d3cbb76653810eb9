"""Five-point alignment templates, at any crop size.

``gpen``: the official GPEN reference points (docs/pipeline.md, Alignment): the 96x112 ArcFace template made square
(x + 8), padded by 28 px on every side to 168x168, scaled to S, cast to float32 as the official code does.
``ffhq``: the FFHQ-512 five-point template of facexlib, which ReActor and FaceFusion use, scaled to S; it frames the
face more tightly (eyes 0.246 S apart against GPEN's 0.21 S).
"""

from __future__ import annotations

import numpy as np

TEMPLATES = ("gpen", "ffhq")

_ARCFACE_96x112 = np.array(
    [[30.29459953, 51.69630051], [65.53179932, 51.50139999], [48.02519989, 71.73660278],
     [33.54930115, 92.3655014], [62.72990036, 92.20410156]], dtype=np.float64)
_FFHQ_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
     [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float64)


def template_points(name: str, size: int) -> np.ndarray:
    """The five template points ``[5, 2]`` (x, y) float32 for a ``size`` x ``size`` crop."""
    if size < 16:
        raise ValueError(f"crop size must be at least 16 pixels, got {size}")
    if name == "gpen":
        return ((_ARCFACE_96x112 + np.array([36.0, 28.0])) * (size / 168.0)).astype(np.float32)
    if name == "ffhq":
        return (_FFHQ_512 * (size / 512.0)).astype(np.float32)
    raise ValueError(f"unknown alignment template {name!r}; choose one of {', '.join(TEMPLATES)}")
