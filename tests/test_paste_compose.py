"""Paste-back details: pass-through frames, per-image faces, output-size limits, detail at 2x/4x by correlation,
analytic masks at the output pixels, parsing label semantics (with a stand-in network), masks zero at the crop edge."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import data_file

from face_pipeline.alignment import align_faces, warp_images
from face_pipeline.errors import PasteError
from face_pipeline.paste import PasteOptions, crop_masks, parsing, paste_faces, rounded_rect_mask
from face_pipeline.types import DetectedFace


@pytest.fixture(scope="module")
def astronaut() -> tuple[torch.Tensor, DetectedFace]:
    import cv2

    rgb = cv2.cvtColor(cv2.imread(str(data_file("faces", "astronaut.jpg"))), cv2.COLOR_BGR2RGB)
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    points = np.asarray(json.loads(data_file("gpen", "alignment", "alignment.json").read_text())
                        ["astronaut.png"]["landmarks_xy"])
    box = (*(points.min(0) - 30), *(points.max(0) + 30))
    return image, DetectedFace(box=tuple(float(v) for v in box), score=0.99, image_index=0,
                               landmarks=tuple((float(x), float(y)) for x, y in points))


def _identity(batch):
    return dataclasses.replace(batch, restored=batch.crops.clone())


def test_frames_without_faces_pass_through_at_the_output_scale(astronaut):
    image, face = astronaut
    frames = torch.cat([image, image.flip(-1), image])
    on_last = dataclasses.replace(face, image_index=2)
    batch = _identity(align_faces(frames, [face, on_last], size=256))
    one = paste_faces(batch, options=PasteOptions(color_correction=False))
    assert torch.equal(one.images[1], frames[1]) and one.mask[1].max() == 0
    assert one.face_masks.shape == (2, 512, 512) and one.face_masks[1, :, :].max() > 0.99
    assert torch.equal(one.mask[2], one.face_masks[1]) and torch.equal(one.mask[0], one.face_masks[0])
    two = paste_faces(batch, options=PasteOptions(scale=2, color_correction=False))
    assert two.images.shape == (3, 3, 1024, 1024) and two.scale == 2
    expected = torch.nn.functional.interpolate(frames[1:2], size=(1024, 1024), mode="bicubic", align_corners=False,
                                               antialias=True).clamp(0, 1)
    torch.testing.assert_close(two.images[1:2], expected)


def test_output_size_limits(astronaut):
    image, face = astronaut
    batch = _identity(align_faces(image, [face], size=256))
    with pytest.raises(PasteError, match="output scale 4 would make images of 2048 px on their long side, above "
                                         "max_output_size 1024; choose a smaller scale"):
        paste_faces(batch, options=PasteOptions(scale=4, max_output_size=1024))
    capped = PasteOptions(scale="auto", max_output_size=1024)
    assert paste_faces(batch, options=capped).scale == 2  # zoom ~2.8 wants 4; capped
    with pytest.raises(ValueError, match="feather must be a number from 0 to 0.5, got 0.7"):
        PasteOptions(feather=0.7)
    with pytest.raises(PasteError, match=r"restored faces must be \[1, 3, S, S\]"):
        paste_faces(dataclasses.replace(batch, restored=torch.zeros(2, 3, 256, 256)))


@pytest.mark.parametrize("scale", [2, 4])
def test_restored_detail_reaches_the_output(astronaut, scale):
    """A fine pattern in a 1024 crop (zoom 5.5 crop px per image px) correlates with the ideal pattern at the
    output pixels: strongly at 4x and 2x, hardly at 1x (where the output cannot hold it)."""
    image, face = astronaut
    batch = align_faces(image, [face], size=1024)
    period = 8.0  # crop pixels: 1.45 output px at 1x (beyond Nyquist), 2.9 at 2x, 5.8 at 4x

    def pattern(x, y):
        return 0.5 + 0.4 * torch.sin(2 * np.pi * x / period) * torch.sin(2 * np.pi * y / period)

    c = torch.arange(1024, dtype=torch.float64)
    restored = pattern(c[None, :], c[:, None]).float().expand(1, 3, 1024, 1024).contiguous()
    batch = dataclasses.replace(batch, restored=restored)

    def correlation(s: int) -> float:
        result = paste_faces(batch, options=PasteOptions(scale=s, color_correction=False))
        out_h, out_w = result.images.shape[-2:]
        ys, xs = torch.meshgrid(torch.arange(out_h, dtype=torch.float64), torch.arange(out_w, dtype=torch.float64),
                                indexing="ij")
        # output pixel -> input pixel -> crop pixel
        ix, iy = (xs - (s - 1) / 2) / s, (ys - (s - 1) / 2) / s
        m = batch.affines[0].double()
        cx, cy = m[0, 0] * ix + m[0, 1] * iy + m[0, 2], m[1, 0] * ix + m[1, 1] * iy + m[1, 2]
        inner = result.mask[0] > 0.99
        got, ideal = result.images[0, 0][inner].double(), pattern(cx, cy)[inner]
        return float(torch.corrcoef(torch.stack([got, ideal]))[0, 1])

    assert correlation(scale) > (0.95 if scale == 4 else 0.85)
    if scale == 2:
        assert correlation(1) < 0.5


def test_analytic_mask_at_output_pixels_equals_the_warped_crop_mask(astronaut):
    image, face = astronaut
    batch = _identity(align_faces(image, [face], size=512))
    result = paste_faces(batch, options=PasteOptions(feather=0.1, color_correction=False, scale=2))
    mask = rounded_rect_mask(512, feather=0.1)
    matrix = batch.inverse_affines.clone()
    matrix *= 2  # crop -> output pixels at 2x: s * x + (s - 1) / 2
    matrix[:, :, 2] += 0.5
    warped = warp_images(mask, matrix, (1024, 1024), interpolation="bilinear")[0, 0]
    assert (warped - result.mask[0]).abs().max() < 0.01
    assert result.mask[0, :5].max() == 0  # far from the face nothing changes


def test_masks_are_zero_at_the_crop_border_and_feather_scales():
    faces = torch.rand(1, 3, 64, 64)
    for kind in ("rounded_rect", "ellipse"):
        for feather in (0.0, 0.1, 0.5):
            m = crop_masks(faces, mask_type=kind, feather=feather)[0, 0]
            border = torch.cat([m[0], m[-1], m[:, 0], m[:, -1]])
            assert m.shape == (64, 64) and border.max() == 0 and m.max() > (0.95 if feather < 0.5 else 0.8)
    narrow = crop_masks(faces, mask_type="rounded_rect", feather=0.05, size=512)[0, 0, 256]
    wide = crop_masks(faces, mask_type="rounded_rect", feather=0.2, size=512)[0, 0, 256]
    ramp = lambda row: int(((row > 0) & (row < 1)).sum())  # noqa: E731
    assert abs(ramp(wide) / ramp(narrow) - 4) < 0.2  # the fade is a fixed fraction of the crop side


class _StandInParser(torch.nn.Module):
    """Labels by position: hair (13) on top, skin (1) in the middle, cloth (18) at the bottom (ParseNet order)."""

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 19, 512, 512)
        logits[:, 13, :170] = 1
        logits[:, 1, 170:400] = 1
        logits[:, 18, 400:] = 1
        return logits, x


def test_parsing_labels_hair_and_feather(monkeypatch, tmp_path):
    (tmp_path / "parsing_parsenet.pth").write_bytes(b"stand-in")
    monkeypatch.setattr(parsing, "_load", lambda *args: parsing.ParsingNet(kind="parsenet", module=_StandInParser()))
    faces = torch.rand(2, 3, 256, 256)
    with_hair = crop_masks(faces, mask_type="parsing", feather=0.05, parsing_dir=tmp_path)
    no_hair = crop_masks(faces, mask_type="parsing_no_hair", feather=0.05, parsing_dir=tmp_path)
    assert with_hair.shape == no_hair.shape == (2, 1, 256, 256)
    column = 128
    assert with_hair[0, 0, 60, column] > 0.99 and no_hair[0, 0, 60, column] < 0.01  # hair kept / excluded
    assert with_hair[0, 0, 140, column] > 0.99 and no_hair[0, 0, 140, column] > 0.99  # skin kept by both
    assert with_hair[0, 0, 230, column] < 0.01  # cloth excluded
    for m in (with_hair, no_hair):
        assert 0 <= m.min() and m.max() <= 1
        assert torch.cat([m[..., 0, :], m[..., -1, :], m[..., :, 0], m[..., :, -1]], -1).max() == 0


def test_parsing_weights_missing_names_file_and_folder(tmp_path):
    with pytest.raises(parsing.ParsingWeightsMissing, match=rf"parsing_parsenet\.pth .*parsing_bisenet\.pth .* in "
                                                            rf"{tmp_path}; download one there"):
        crop_masks(torch.rand(1, 3, 64, 64), mask_type="parsing", feather=0.1, parsing_dir=tmp_path)
    with pytest.raises(parsing.ParsingWeightsMissing, match="a parsing folder \\(none given\\)"):
        crop_masks(torch.rand(1, 3, 64, 64), mask_type="parsing_no_hair", feather=0.1)
