"""Which detected faces to restore: all, the largest, or some by index; filtered (score, size, a region mask),
sorted and capped. ``choose_faces`` also says why each face not restored was left out."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .budgets import MAX_FACE_INDEX, MAX_FACES_PER_IMAGE, MAX_INDICES_TEXT
from .region import MIN_OVERLAP, coverages
from .types import DetectedFace

SELECT_MODES = ("all", "largest", "indices")
SORT_ORDERS = ("area", "left_to_right", "top_to_bottom", "score")
CAP_REASON = f"beyond the cap of {MAX_FACES_PER_IMAGE} faces per image (budgets.MAX_FACES_PER_IMAGE)"

_SORT_KEYS = {
    "area": lambda f: -f.area,
    "left_to_right": lambda f: (f.box[0] + f.box[2]) / 2,
    "top_to_bottom": lambda f: (f.box[1] + f.box[3]) / 2,
    "score": lambda f: -f.score,
}

_INDEX_PART = re.compile(r"([0-9]+)\s*-\s*([0-9]+)|([0-9]+)")


def parse_indices(text: str) -> tuple[int, ...]:
    """``"0,2,3"``, ``"0-2"`` or ``"1, 4-5"`` -> sorted unique indices; ``""`` -> ``()``.

    Bounded whatever the text: at most ``MAX_INDICES_TEXT`` characters, indices 0..``MAX_FACE_INDEX``; ranges are
    merged before they are expanded, so the result holds at most 10,000 numbers. ``ValueError`` says what is wrong."""
    text = str(text)
    if len(text) > MAX_INDICES_TEXT:
        raise ValueError(f"face indices: the text is {len(text)} characters long, more than the {MAX_INDICES_TEXT} "
                         f"read; write ranges such as '0-3' instead of listing every index")
    spans: list[tuple[int, int]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = _INDEX_PART.fullmatch(part)
        if match is None:
            raise ValueError(f"face indices must look like '0,2' or '0-3'; could not read {part!r} in {text!r}")
        low, high = (int(match.group(3)),) * 2 if match.group(3) is not None else map(int, match.group(1, 2))
        if low > high:
            raise ValueError(f"face index range {part!r} runs backwards")
        if high > MAX_FACE_INDEX:
            raise ValueError(f"face index {high} in {part!r} is above {MAX_FACE_INDEX}, the largest accepted (indices "
                             f"count the faces of one image from 0)")
        spans.append((low, high))
    indices: list[int] = []
    for low, high in sorted(spans):  # merged: overlapping or repeated ranges are expanded once
        start = max(low, indices[-1] + 1) if indices else low
        indices.extend(range(start, high + 1))
    return tuple(indices)


@dataclass(frozen=True)
class FaceChoice:
    """What selection decided about one detected face."""

    face: DetectedFace
    index: int | None  # position after filtering and sorting (what ``indices`` refers to); None if filtered out
    selected: bool
    reason: str  # "selected", or why not (e.g. "smaller than min_face_size (12.4 < 20 px)")


def choose_faces(
    faces_per_image: list[list[DetectedFace]],
    *,
    mode: str = "all",
    indices: Sequence[int] = (),
    sort_by: str = "area",
    min_size: float = 0.0,
    max_faces: int = 0,
    score_threshold: float = 0.0,
    region: torch.Tensor | None = None,
    min_overlap: float = MIN_OVERLAP,
) -> list[list[FaceChoice]]:
    """Decide for every detected face whether it is restored, and why not.

    ``faces_per_image`` has one list per image (as ``FaceDetector.detect`` returns). Per image: faces scoring
    below ``score_threshold``, smaller than ``min_size`` pixels (the box's shorter side) or, when a ``region`` mask
    is given (``[N, H, W]`` 0..1, one per image or one for all, see ``region.py``), whose box it covers less than
    ``min_overlap`` (0..1), are filtered out; the others are sorted by ``sort_by`` (one of ``SORT_ORDERS``: area
    and score descending, positions by box centre) and numbered (``index``); then all / the largest / the given
    ``indices`` (in the given order; out-of-range ones are skipped, repeats ignored) are kept, at most
    ``max_faces`` of them (0 = no limit) and at most ``budgets.MAX_FACES_PER_IMAGE`` (``CAP_REASON``). Returns per
    image every face: the selected ones first, in the order they are restored, then the others by index (filtered-out
    ones last). Raises ``ValueError`` for an unknown mode or
    order, negative limits or an overlap outside 0..1."""
    if mode not in SELECT_MODES:
        raise ValueError(f"unknown face selection {mode!r}; choose one of {', '.join(SELECT_MODES)}")
    if sort_by not in SORT_ORDERS:
        raise ValueError(f"unknown sort order {sort_by!r}; choose one of {', '.join(SORT_ORDERS)}")
    if max_faces < 0 or min_size < 0:
        raise ValueError("max_faces and min_size must not be negative")
    if not 0.0 <= min_overlap <= 1.0:
        raise ValueError(f"the region overlap must be between 0 and 1, got {min_overlap}")
    covered = None
    if region is not None:
        if region.dim() != 3 or region.shape[0] != len(faces_per_image):
            raise ValueError(f"the region must be [{len(faces_per_image)}, H, W] at the images' size (see "
                             f"region.masks_for), got {list(region.shape)}")
        covered = coverages(faces_per_image, region)
    chosen = []
    for image, faces in enumerate(faces_per_image):
        dropped: list[FaceChoice] = []
        kept = []
        for k, f in enumerate(faces):
            if f.score < score_threshold:
                why = f"score below the threshold ({f.score:.3f} < {score_threshold:g})"
            elif min(f.width, f.height) < min_size:
                why = f"smaller than min_face_size ({min(f.width, f.height):.1f} < {min_size:g} px)"
            elif covered is not None and covered[image][k] < min_overlap:
                why = f"outside the region mask ({covered[image][k]:.0%} of its box covered < {min_overlap:.0%})"
            else:
                kept.append(f)
                continue
            dropped.append(FaceChoice(face=f, index=None, selected=False, reason=why))
        kept.sort(key=_SORT_KEYS[sort_by])
        picked = list(range(len(kept)))  # positions in `kept`, in restore order
        why_not = {}
        if mode == "largest":
            largest = min(range(len(kept)), key=lambda i: _SORT_KEYS["area"](kept[i]), default=None)
            picked = [] if largest is None else [largest]
            why_not = dict.fromkeys(range(len(kept)), "not the largest face")
        elif mode == "indices":
            wanted = dict.fromkeys(int(i) for i in indices)  # unique, in the given order
            picked = [i for i in wanted if 0 <= i < len(kept)]
            why_not = dict.fromkeys(range(len(kept)), "its index is not in indices")
        if max_faces and max_faces <= MAX_FACES_PER_IMAGE and len(picked) > max_faces:
            for i in picked[max_faces:]:
                why_not[i] = f"beyond max_faces ({max_faces})"
            picked = picked[:max_faces]
        elif len(picked) > MAX_FACES_PER_IMAGE:
            for i in picked[MAX_FACES_PER_IMAGE:]:
                why_not[i] = CAP_REASON
            picked = picked[:MAX_FACES_PER_IMAGE]
        others = [FaceChoice(face=kept[i], index=i, selected=False, reason=why_not[i])
                  for i in range(len(kept)) if i not in picked]
        chosen.append([FaceChoice(face=kept[i], index=i, selected=True, reason="selected") for i in picked]
                      + others + dropped)
    return chosen



def _listed(values: Sequence, limit: int = 10) -> str:
    return ", ".join(map(str, values[:limit])) + (", ..." if len(values) > limit else "")


def _face_count(per_image: list[FaceChoice]) -> str:
    """How many faces an image has for ``indices`` ("2 faces (indices 0-1)"), and how many were filtered out."""
    count = sum(c.index is not None for c in per_image)
    dropped = sum(c.index is None and not c.selected for c in per_image)
    text = {0: "no face", 1: "1 face (index 0)"}.get(count, f"{count} faces (indices 0-{count - 1})")
    return text + (f", {dropped} more filtered out" if dropped else "")


def selection_notes(choices: list[list[FaceChoice]], *, mode: str, indices: Sequence[int] = ()) -> list[str]:
    """What selection decided that changes the result without being an error, in words for the user: requested face
    indices that do not exist (with how many faces each image has) and images where nothing is restored (returned
    unchanged). ``choices`` as ``choose_faces`` returns them; ``mode`` and ``indices`` as it was given."""
    notes = []
    missing_in: list[int] = []
    if mode == "indices":
        missing: set[int] = set()
        for image, per_image in enumerate(choices):
            count = sum(c.index is not None for c in per_image)
            absent = [i for i in indices if i >= count]
            if absent:
                missing_in.append(image)
                missing.update(absent)
        if missing_in:
            wanted = sorted(missing)
            what = f"face index {wanted[0]} does not" if len(wanted) == 1 else f"face indices {_listed(wanted)} do not"
            if len(choices) == 1:
                notes.append(f"{what} exist: the image has {_face_count(choices[0])}")
            else:
                counts = "; ".join(f"image {i} has {_face_count(choices[i])}" for i in missing_in[:10])
                notes.append(f"{what} exist in {len(missing_in)} of {len(choices)} images ({counts}"
                             f"{'; ...' if len(missing_in) > 10 else ''})")
    unselected = [i for i, per_image in enumerate(choices) if not any(c.selected for c in per_image)]
    none_found = [i for i in unselected if not choices[i]]
    not_chosen = [i for i in unselected if choices[i] and i not in missing_in]
    capped = [i for i, per_image in enumerate(choices) if any(c.reason == CAP_REASON for c in per_image)]
    if capped:
        notes.append(f"more than {MAX_FACES_PER_IMAGE} faces in {len(capped)} of {len(choices)} image(s) (index "
                     f"{_listed(capped, 20)}): only the first {MAX_FACES_PER_IMAGE} in the sort order are restored, "
                     f"the pack's cap per image; restore the others by indices or on crops of the image")
    if none_found:
        notes.append(f"no face found in {len(none_found)} of {len(choices)} image(s) (index {_listed(none_found, 20)})"
                     f": returned unchanged")
    if not_chosen:
        notes.append(f"faces were found but none selected in {len(not_chosen)} of {len(choices)} image(s) (index "
                     f"{_listed(not_chosen, 20)}; the face report says why): returned unchanged")
    return notes
