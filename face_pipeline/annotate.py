"""An annotated preview of what detection and selection found, so picking ``indices`` is not guesswork.

Each face gets its box and a label ``#index score`` (``#-`` when a filter left it out, ``id N`` for its video track,
``rN`` when it was found on the image turned by N degrees, ``-> S`` the size of the model that restores it when
several models share the work); selected faces in a solid green box with their five
landmarks, the others in a dashed box: orange when they have an index but were not picked, gray when a filter (size,
score, region mask) left them out. Drawn with OpenCV (imported here, when the preview is made) onto a
separate layer that is blended in only where something is drawn: every other pixel is the input's, bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from .face_report import FaceModels
from .selection import FaceChoice

SELECTED = (40, 220, 60)  # RGB
LEFT_OUT = (255, 150, 0)  # numbered, but not picked (indices, largest, max_faces)
FILTERED = (170, 170, 170)  # left out before numbering (score, min_face_size, region mask)
TEXT = (0, 0, 0)
FONT_SCALE_PER_PIXEL = 1 / 3000  # font scale per pixel of the image's longer side (0.35 at least)


def _style(height: int, width: int) -> tuple[int, float, int]:
    """Line thickness, font scale and text stroke for an image of this size."""
    long_side = max(height, width)
    scale = max(0.35, long_side * FONT_SCALE_PER_PIXEL)
    return max(1, round(long_side / 800)), scale, max(1, round(scale * 1.5))


def label_text(choice: FaceChoice, models: FaceModels | None = None) -> str:
    face = choice.face
    text = f"#{'-' if choice.index is None else choice.index} {face.score:.2f}"
    if face.track_id is not None:
        text += f" id {face.track_id}"
    if face.rotation:
        text += f" r{face.rotation}"
    if models is not None and choice.selected and face in models:
        text += f" -> {models[face][0]}"
    return text


def label_rect(choice: FaceChoice, height: int, width: int,
               models: FaceModels | None = None) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a face's label: above its box's top-left corner, or just inside the box when there is
    no room above; clipped to the image."""
    import cv2

    _, scale, stroke = _style(height, width)
    (text_w, text_h), baseline = cv2.getTextSize(label_text(choice, models), cv2.FONT_HERSHEY_SIMPLEX, scale, stroke)
    x0 = round(choice.face.box[0])
    top = round(choice.face.box[1])
    label_h = text_h + baseline + 2
    y0 = top - label_h if top - label_h >= 0 else top
    return max(0, x0), max(0, y0), min(width, x0 + text_w + 2), min(height, y0 + label_h)


def _dashed_rectangle(canvas: np.ndarray, p0: tuple[int, int], p1: tuple[int, int], color, thickness: int) -> None:
    import cv2

    dash = 6 * thickness
    (x0, y0), (x1, y1) = p0, p1
    for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        length = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
        for start in range(0, length, 2 * dash):
            end = min(start + dash, length)
            t0, t1 = start / max(length, 1), end / max(length, 1)
            q0 = (round(a[0] + (b[0] - a[0]) * t0), round(a[1] + (b[1] - a[1]) * t0))
            q1 = (round(a[0] + (b[0] - a[0]) * t1), round(a[1] + (b[1] - a[1]) * t1))
            cv2.line(canvas, q0, q1, color, thickness)


def _draw(layer: np.ndarray, alpha: np.ndarray, choice: FaceChoice, models: FaceModels | None = None) -> None:
    """Draw one face on the colour ``layer`` ``[H, W, 3]`` and its coverage ``alpha`` ``[H, W]`` (uint8)."""
    import cv2

    height, width = alpha.shape
    thickness, scale, stroke = _style(height, width)
    color = SELECTED if choice.selected else LEFT_OUT if choice.index is not None else FILTERED
    x1, y1, x2, y2 = (round(v) for v in choice.face.box)
    for canvas, ink in ((layer, color), (alpha, 255)):
        if choice.selected:
            cv2.rectangle(canvas, (x1, y1), (x2, y2), ink, thickness)
            for x, y in choice.face.landmarks:
                cv2.circle(canvas, (round(x), round(y)), thickness + 1, ink, -1)
        else:
            _dashed_rectangle(canvas, (x1, y1), (x2, y2), ink, thickness)
    lx0, ly0, lx1, ly1 = label_rect(choice, height, width, models)
    if lx1 <= lx0 or ly1 <= ly0:
        return
    layer[ly0:ly1, lx0:lx1] = color
    alpha[ly0:ly1, lx0:lx1] = 255
    (_, text_h), _ = cv2.getTextSize(label_text(choice, models), cv2.FONT_HERSHEY_SIMPLEX, scale, stroke)
    text_layer = np.zeros((ly1 - ly0, lx1 - lx0), np.uint8)  # the text, antialiased, inside its label only
    cv2.putText(text_layer, label_text(choice, models), (1, 1 + text_h), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, stroke,
                cv2.LINE_AA)
    ink = text_layer[..., None].astype(np.float32) / 255
    patch = layer[ly0:ly1, lx0:lx1].astype(np.float32)
    layer[ly0:ly1, lx0:lx1] = np.round(patch * (1 - ink) + np.array(TEXT, np.float32) * ink).astype(np.uint8)


def annotate_faces(images: torch.Tensor, choices: list[list[FaceChoice]],
                   models: FaceModels | None = None) -> torch.Tensor:
    """``images`` ``[B, 3, H, W]`` float RGB 0..1 with every face of ``choices`` (per image, as
    ``pipeline.find_choices`` gives them) drawn on it; ``models``: the model of each selected face, labelled (when
    several models share the work). Returns a new ``[B, 3, H, W]`` float32 tensor on the
    images' device; pixels away from the boxes and labels are the input's exactly."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"annotate_faces expects images [B, 3, H, W], got {list(images.shape)}")
    if len(choices) != images.shape[0]:
        raise ValueError(f"annotate_faces got faces for {len(choices)} images and {images.shape[0]} images")
    out = images.detach().float().clone()
    height, width = out.shape[-2:]
    for index, per_image in enumerate(choices):
        if not per_image:
            continue
        layer = np.zeros((height, width, 3), np.uint8)
        alpha = np.zeros((height, width), np.uint8)
        # left-out faces first, so a selected face's box and label are drawn over them
        for choice in sorted(per_image, key=lambda c: (c.selected, -(c.index or 0))):
            _draw(layer, alpha, choice, models)
        drawn = torch.from_numpy(alpha).to(out.device)
        where = drawn > 0
        weight = drawn.float()[where] / 255  # [N] coverage of the drawn pixels
        colour = torch.from_numpy(layer).to(out.device).permute(2, 0, 1).float()[:, where] / 255  # [3, N]
        target = out[index][:, where]
        out[index][:, where] = target + weight * (colour - target)
    return out
