"""Paste-back: identity restorer round trip, no seam, detail kept at 2x, overlaps, colour, masks."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from helpers import load_photo, official_landmarks

from face_pipeline.alignment import align_faces
from face_pipeline.errors import PasteError
from face_pipeline.paste import (
    ParsingWeightsMissing,
    PasteOptions,
    choose_scale,
    ellipse_mask,
    match_color,
    paste_faces,
    rounded_rect_mask,
)
from face_pipeline.types import DetectedFace


@pytest.fixture(scope="module")
def hopper():
    """Grace Hopper's photo and her face, built from the official alignment's landmarks (no detector needed)."""
    points = official_landmarks("grace_hopper.jpg")
    box = (*(points.min(0) - (40, 60)), *(points.max(0) + (40, 50)))
    face = DetectedFace(box=tuple(float(v) for v in box), score=0.99, image_index=0,
                        landmarks=tuple((float(x), float(y)) for x, y in points))
    return load_photo("grace_hopper.jpg"), face


def identity(batch):
    return dataclasses.replace(batch, restored=batch.crops.clone())


def test_identity_restorer_gives_back_the_image_without_a_seam(hopper):
    image, face = hopper
    batch = identity(align_faces(image, [face], size=1024))
    result = paste_faces(batch, options=PasteOptions(color_correction=False))
    outside = result.mask[0] == 0
    assert torch.equal(result.images[0][:, outside], image[0][:, outside])  # untouched away from the face
    diff = (result.images - image)[0].abs().mean(0)  # [H, W]
    # only resampling error (crop up, antialiased back down): measured mean 0.002, 99th percentile < 0.03
    assert diff.mean().item() < 0.005 and torch.quantile(diff.flatten(), 0.99).item() < 0.05
    edge = (result.mask[0] > 0.02) & (result.mask[0] < 0.98)
    gy, gx = torch.gradient(diff)
    assert torch.hypot(gx, gy)[edge].mean().item() < 0.005  # no step in the difference across the mask edge


def test_color_correction_is_harmless_on_an_identity_restore(hopper):
    image, face = hopper
    result = paste_faces(identity(align_faces(image, [face], size=512)),
                         options=PasteOptions(color_correction=True))
    diff = (result.images - image).abs()
    assert diff.mean().item() < 0.002 and diff.max().item() < 0.1


def test_output_scale_2_takes_detail_from_the_full_resolution_crop(hopper):
    image, face = hopper
    batch = align_faces(image, [face], size=2048)
    # a fine checkerboard (period 8 crop pixels) only survives if the crop is not squeezed to 1x first
    yy, xx = torch.meshgrid(torch.arange(2048), torch.arange(2048), indexing="ij")
    pattern = (((yy // 4) + (xx // 4)) % 2).float().expand(1, 3, 2048, 2048)
    batch = dataclasses.replace(batch, restored=pattern.contiguous())
    one = paste_faces(batch, options=PasteOptions(scale=1, color_correction=False))
    two = paste_faces(batch, options=PasteOptions(scale=2, color_correction=False))
    assert two.images.shape[-2:] == (1200, 1024) and two.scale == 2 and two.mask.shape[-2:] == (1200, 1024)
    inner2 = two.mask[0] > 0.99
    inner1 = one.mask[0] > 0.99

    def detail(img, inner):
        gy, gx = torch.gradient(img[0].mean(0))
        return torch.hypot(gx, gy)[inner].mean().item()

    assert detail(two.images, inner2) > 2 * detail(one.images, inner1)
    # same geometry at both scales: with the real crop (no near-Nyquist pattern to alias in the comparison),
    # the 2x paste brought back to 1x equals the 1x paste (measured 0.005)
    smooth = identity(batch)
    one = paste_faces(smooth, options=PasteOptions(scale=1, color_correction=False))
    down = F.interpolate(paste_faces(smooth, options=PasteOptions(scale=2, color_correction=False)).images,
                         size=(600, 512), mode="area")
    assert (down - one.images)[:, :, inner1].abs().mean().item() < 0.02


def test_auto_scale_keeps_the_largest_face_native(hopper):
    image, face = hopper
    batch = identity(align_faces(image, [face], size=2048))
    zoom = batch.affines[0, 0, :2].norm().item()  # crop pixels per image pixel (~10 here)
    assert zoom > 4
    assert choose_scale(batch, "auto", max_output_size=8192) == 4
    assert choose_scale(batch, "auto", max_output_size=1500) == 2  # capped by the output size
    assert choose_scale(identity(align_faces(image, [face], size=512)), "auto", max_output_size=8192) == 2
    assert choose_scale(identity(align_faces(image, [face], size=256)), "auto", max_output_size=8192) == 1
    with pytest.raises(PasteError, match="output scale must be 1, 2, 4 or 'auto'"):
        choose_scale(batch, 3, max_output_size=8192)


def test_overlapping_faces_take_the_larger_mask_value(hopper):
    image, face = hopper
    shifted = DetectedFace(box=face.box, score=face.score, image_index=0,
                           landmarks=tuple((x + 40, y) for x, y in face.landmarks))
    batch = align_faces(image, [face, shifted], size=256)
    red = torch.zeros_like(batch.crops)
    red[0, 0] = 1.0
    red[1, 2] = 1.0
    result = paste_faces(dataclasses.replace(batch, restored=red), options=PasteOptions(color_correction=False))
    assert torch.allclose(result.mask[0], result.face_masks.max(0).values)
    winner_second = result.face_masks[1] > result.face_masks[0] + 0.5
    assert result.images[0, 2][winner_second].mean() > 0.9  # where face 2's mask is larger, face 2 is shown


def test_color_correction_moves_statistics_toward_the_original():
    torch.manual_seed(0)
    original = torch.rand(2, 3, 64, 64) * 0.5 + 0.25
    restored = (original * 0.6 + torch.tensor([0.3, 0.0, -0.1]).reshape(1, 3, 1, 1)).clamp(0, 1)
    mask = torch.ones(2, 1, 64, 64)
    corrected = match_color(restored, original, mask)
    before = (restored.mean((2, 3)) - original.mean((2, 3))).abs().max()
    after = (corrected.mean((2, 3)) - original.mean((2, 3))).abs().max()
    assert after < 0.1 * before
    assert (corrected.std((2, 3)) - original.std((2, 3))).abs().max() < 0.02


def test_mask_shapes_and_feather():
    sharp = rounded_rect_mask(256, feather=0.01)
    soft = rounded_rect_mask(256, feather=0.2)
    assert sharp.shape == (1, 1, 256, 256) and sharp[0, 0, 128, 128] == 1 and sharp[0, 0, 0, 0] == 0
    assert (soft[0, 0, 128] < 1).sum() > (sharp[0, 0, 128] < 1).sum()  # a wider fade
    ellipse = ellipse_mask(256, feather=0.05)
    assert ellipse[0, 0, 138, 128] == 1 and ellipse[0, 0, 5, 5] == 0


def test_parsing_mask_needs_its_weights(hopper, tmp_path):
    image, face = hopper
    batch = identity(align_faces(image, [face], size=256))
    with pytest.raises(ParsingWeightsMissing, match=r"parsing_parsenet\.pth .* in .*download one there"):
        paste_faces(batch, options=PasteOptions(mask_type="parsing", parsing_dir=tmp_path))


def test_parsing_mask_runs_with_parsenet_weights(hopper, tmp_path):
    """One real ParseNet forward with random weights (about 20 s on 2 CPU cores: the network is heavy at 512)."""
    from facexlib.parsing import ParseNet

    torch.manual_seed(0)
    torch.save(ParseNet(in_size=512, out_size=512, parsing_ch=19).state_dict(), tmp_path / "parsing_parsenet.pth")
    image, face = hopper
    batch = identity(align_faces(image, [face], size=256))
    result = paste_faces(batch, options=PasteOptions(mask_type="parsing_no_hair", parsing_dir=tmp_path))
    assert result.mask.shape == (1, 600, 512) and result.face_masks.shape == (1, 600, 512)
    assert 0 <= result.mask.min() and result.mask.max() <= 1


def test_wrong_images_and_unrestored_faces_are_errors(hopper):
    image, face = hopper
    batch = align_faces(image, [face], size=256)
    with pytest.raises(PasteError, match="have not been restored yet"):
        paste_faces(batch)
    with pytest.raises(PasteError, match="detected on a batch of 1 images of 512x600; got images of shape"):
        paste_faces(identity(batch), images=torch.rand(1, 3, 100, 100))
    with pytest.raises(ValueError, match="mask_type must be one of rounded_rect, ellipse, parsing, parsing_no_hair, "
                                         "parsing_official, rect_official; got 'square'"):
        PasteOptions(mask_type="square")  # the record refuses it: paste_faces takes only a built record
    with pytest.raises(TypeError, match="options must be a PasteOptions, got dict"):
        paste_faces(identity(batch), options={"mask_type": "ellipse"})


def test_background_is_used_and_resized(hopper):
    image, face = hopper
    batch = identity(align_faces(image, [face], size=256))
    background = torch.zeros(1, 3, 300, 256)
    result = paste_faces(batch, background=background, options=PasteOptions(scale=2))
    outside = result.mask[0] == 0
    assert result.images[0][:, outside].abs().max() == 0
