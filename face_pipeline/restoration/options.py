"""``RestoreOptions``: what the restore stage (``restore_faces``) is asked to do, validated once when built."""

from __future__ import annotations

from dataclasses import dataclass

from ..fields import check_fields, option
from .modes import RESTORE_MODES

ROUTING_RULES = ("smallest_sufficient", "largest")  # ``routing.route``


@dataclass(frozen=True)
class RestoreOptions:
    """The restore stage's options. Invalid values (out of range, NaN/inf, wrong type) raise ``ValueError`` here."""

    mode: str = option("restore", "restore (GPEN-BFR), colorize (GPEN-Colorization), inpaint (GPEN-Inpainting)",
                       choices=RESTORE_MODES)
    strength: float = option(1.0, "blend of restored (1) and original (0) face", low=0.0, high=1.0)
    truncate_restored: bool = option(False, "truncate the model's output to 8-bit levels (floor), as the official "
                                            "code's astype(uint8); strength then blends in 8 bits, rounded, as its "
                                            "cv2.addWeighted (default: kept in float)", boolean=True)
    batch_size: int | None = option(None, "faces per forward (default: from free memory)", low=1, whole=True,
                                    optional=True)
    model_routing: str = option("smallest_sufficient", "with several models: smallest_sufficient gives each face the "
                                "smallest model at least its size in the output (the largest model the larger "
                                "faces), largest gives every face the largest model", choices=ROUTING_RULES)

    def __post_init__(self) -> None:
        check_fields(self)
