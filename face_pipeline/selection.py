"""Which detected faces to restore: all, the largest, or some by index; sorted, filtered and capped."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .types import DetectedFace

SELECT_MODES = ("all", "largest", "indices")
SORT_ORDERS = ("area", "left_to_right", "top_to_bottom", "score")

_SORT_KEYS = {
    "area": lambda f: -f.area,
    "left_to_right": lambda f: (f.box[0] + f.box[2]) / 2,
    "top_to_bottom": lambda f: (f.box[1] + f.box[3]) / 2,
    "score": lambda f: -f.score,
}


def parse_indices(text: str) -> tuple[int, ...]:
    """``"0,2,3"``, ``"0-2"`` or ``"1, 4-5"`` -> sorted unique indices; ``""`` -> ``()``."""
    indices: set[int] = set()
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)\s*-\s*(\d+)|(\d+)", part)
        if match is None:
            raise ValueError(f"face indices must look like '0,2' or '0-3'; could not read {part!r} in {text!r}")
        if match.group(3) is not None:
            indices.add(int(match.group(3)))
        else:
            low, high = int(match.group(1)), int(match.group(2))
            if low > high:
                raise ValueError(f"face index range {part!r} runs backwards")
            indices.update(range(low, high + 1))
    return tuple(sorted(indices))


def select_faces(
    faces_per_image: list[list[DetectedFace]],
    *,
    mode: str = "all",
    indices: Sequence[int] = (),
    sort_by: str = "area",
    min_size: float = 0.0,
    max_faces: int = 0,
    score_threshold: float = 0.0,
) -> list[list[DetectedFace]]:
    """Choose faces per image: ``faces_per_image`` has one list per image (as ``FaceDetector.detect`` returns);
    the result has the same length.

    Per image: drop faces scoring below ``score_threshold`` or smaller than ``min_size`` pixels (the box's shorter
    side), sort by ``sort_by`` (one of ``SORT_ORDERS``: area and score descending, positions by box centre), then
    keep all / the largest / the given ``indices`` (positions after sorting, in the given order; out-of-range ones
    are skipped, repeats ignored), and at most ``max_faces`` of them (0 = no limit). Raises ``ValueError`` for an
    unknown mode or order, or negative limits."""
    if mode not in SELECT_MODES:
        raise ValueError(f"unknown face selection {mode!r}; choose one of {', '.join(SELECT_MODES)}")
    if sort_by not in SORT_ORDERS:
        raise ValueError(f"unknown sort order {sort_by!r}; choose one of {', '.join(SORT_ORDERS)}")
    if max_faces < 0 or min_size < 0:
        raise ValueError("max_faces and min_size must not be negative")
    selected = []
    for faces in faces_per_image:
        kept = [f for f in faces if f.score >= score_threshold and min(f.width, f.height) >= min_size]
        kept.sort(key=_SORT_KEYS[sort_by])
        if mode == "largest":
            kept = sorted(kept, key=_SORT_KEYS["area"])[:1]
        elif mode == "indices":
            wanted = dict.fromkeys(int(i) for i in indices)  # unique, in the given order
            kept = [kept[i] for i in wanted if 0 <= i < len(kept)]
        if max_faces:
            kept = kept[:max_faces]
        selected.append(kept)
    return selected
