"""``PasteOptions``: how the paste stage (``paste_within_memory`` / ``paste_faces``) composites restored faces,
validated once when built. The stage functions take the record itself (``options=``), so a new paste option is
its field here and its use, nothing in between."""

from __future__ import annotations

from dataclasses import dataclass

from ..fields import check_fields, option
from .masks import MASK_TYPES
from .placement import PASTE_INTERPOLATIONS
from .scale import SCALES

DEFAULT_MAX_OUTPUT_SIZE = 8192
MIN_OUTPUT_SIZE, MAX_OUTPUT_SIZE = 64, 65536  # bounds of max_output_size (pixels of the output's long side)


@dataclass(frozen=True)
class PasteOptions:
    """The paste stage's options. Invalid values raise ``ValueError`` here; ``max_output_size=0`` means the default
    (8192)."""

    mask_type: str = option("rounded_rect", "paste mask", choices=MASK_TYPES)
    feather: float = option(0.1, "softness of the mask edge, as a fraction of the face size",
                             low=0.0, high=0.5)
    color_correction: bool = option(True, "match the restored face's colours to the original face", boolean=True)
    scale: int | str = option(1, "output scale; auto: the smallest that keeps the restored faces' detail",
                              choices=(*SCALES, "auto"))
    max_output_size: int = option(DEFAULT_MAX_OUTPUT_SIZE, "cap of the output's long side", low=MIN_OUTPUT_SIZE,
                                  high=MAX_OUTPUT_SIZE, whole=True)
    parsing_dir: str | None = option(None, "folder of the face-parsing weights (mask_type parsing*)", path=True,
                                     optional=True)
    keep_gray: bool = option(True, "black-and-white images (R = G = B) stay black-and-white (not in colorize mode)",
                             boolean=True)
    paste_interpolation: str = option("bicubic", "how the restored faces are warped back: bicubic (antialiased "
                                      "when shrinking), or bilinear as the official GPEN code (no antialiasing)",
                                      choices=PASTE_INTERPOLATIONS)
    round_pasted: bool = option(False, "round the warped-back faces to 8-bit levels, as the official code's uint8 "
                                       "warp (default: kept in float)", boolean=True)
    small_face_blur: float = option(0.0, "faces whose detection box's smaller side is under this many pixels get "
                                         "the official 3x3 blur [1 2 1] before the paste (official: 100; 0: off)",
                                    low=0.0, high=MAX_OUTPUT_SIZE)
    round_output: bool = option(False, "blend as the official code: image * (1 - mask) + face * mask on 8-bit levels, "
                                       "rounded (cv2.convertScaleAbs); default: in float, rounded only when saved",
                                boolean=True)

    def __post_init__(self) -> None:
        if self.scale != "auto" and (isinstance(self.scale, bool) or self.scale not in SCALES):
            raise ValueError(f"scale must be one of {', '.join(map(str, SCALES))} or 'auto'; got {self.scale!r}")
        if self.max_output_size == 0:
            object.__setattr__(self, "max_output_size", DEFAULT_MAX_OUTPUT_SIZE)
        check_fields(self)
