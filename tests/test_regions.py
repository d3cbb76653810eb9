"""Region masks: selection by a mask (only the faces it covers), protected pixels in paste-back, and the reasons
selection gives for every face it leaves out."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import data_file, require_shared

from face_pipeline.alignment import align_faces
from face_pipeline.detection import load_detector
from face_pipeline.errors import InvalidImageError, PasteError
from face_pipeline.image import load_image
from face_pipeline.paste import PasteOptions, paste_faces
from face_pipeline.paste.protect import keep_weights
from face_pipeline.pipeline import PipelineOptions, run_pipeline
from face_pipeline.region import box_coverage, masks_for
from face_pipeline.selection import choose_faces
from face_pipeline.types import DetectedFace


def face(x, y, size, score=0.99):
    points = ((x + 0.3 * size, y + 0.4 * size), (x + 0.7 * size, y + 0.4 * size), (x + 0.5 * size, y + 0.6 * size),
              (x + 0.35 * size, y + 0.75 * size), (x + 0.65 * size, y + 0.75 * size))
    return DetectedFace(box=(x, y, x + size, y + size), score=score, landmarks=points, image_index=0)


class Gray(torch.nn.Module):
    """A stand-in GPEN: a flat mid-gray face, so every pasted pixel shows."""

    config = type("Config", (), {"size": 256})()

    def forward(self, x):
        return torch.zeros_like(x)


@pytest.fixture(scope="module")
def detector():
    return load_detector("yunet_opencv", weights_dir=data_file("detectors"))


@pytest.fixture(scope="module")
def two_faces():
    hopper = load_image(data_file("faces", "grace_hopper.jpg"))  # [1, 3, 600, 512]
    return torch.cat([hopper, hopper.flip(-1)], dim=-1)  # [1, 3, 600, 1024]: one face in each half


def test_box_coverage_and_mask_shapes():
    mask = torch.zeros(100, 200)
    mask[:, :100] = 1
    assert box_coverage(mask, (10, 10, 29, 29)) == 1.0
    assert box_coverage(mask, (90, 10, 109, 29)) == 0.5
    assert box_coverage(mask, (150, 10, 169, 29)) == 0.0
    assert box_coverage(mask, (-10, 10, 9, 29)) == 0.5  # the part outside the image is not covered
    assert masks_for(mask, batch=3, size=(100, 200)).shape == (3, 100, 200)
    assert torch.equal(masks_for(mask[None, None], batch=1, size=(50, 100))[0, :, :49], torch.ones(50, 49))
    with pytest.raises(InvalidImageError, match="the region mask has 2 masks for 3 images"):
        masks_for(torch.zeros(2, 10, 10), batch=3, size=(10, 10), what="region mask")
    with pytest.raises(InvalidImageError, match=r"must hold values in 0..1 \(found 0..255\)"):
        masks_for(torch.full((1, 10, 10), 255.0).index_fill_(1, torch.tensor([0]), 0), batch=1, size=(10, 10))


def test_choose_faces_says_why_a_face_is_left_out():
    a, b, c, weak = face(300, 10, 50), face(10, 200, 80), face(150, 100, 20), face(400, 300, 60, score=0.4)
    chosen = choose_faces([[a, b, c, weak]], mode="indices", indices=(2, 0), min_size=10, score_threshold=0.5)[0]
    assert [(x.face, x.index, x.selected) for x in chosen] == [
        (c, 2, True), (b, 0, True), (a, 1, False), (weak, None, False)]
    assert [x.reason for x in chosen] == ["selected", "selected", "its index is not in indices",
                                          "score below the threshold (0.400 < 0.5)"]
    region = torch.zeros(1, 400, 500)
    region[0, :, :200] = 1  # covers b (left) and c, not a
    chosen = choose_faces([[a, b, c]], region=region, max_faces=1)[0]
    assert [(x.face, x.index, x.selected, x.reason) for x in chosen] == [
        (b, 0, True, "selected"), (c, 1, False, "beyond max_faces (1)"),
        (a, None, False, "outside the region mask (0% of its box covered < 30%)")]
    assert [x.face for x in choose_faces([[a, b, c]], region=region)[0] if x.selected] == [b, c]
    assert [x.face for x in choose_faces([[a, b, c]], region=region, min_overlap=0.0)[0] if x.selected] == [b, a, c]
    largest = choose_faces([[a, b, c]], mode="largest", min_size=30)[0]
    assert [(x.index, x.reason) for x in largest] == [
        (0, "selected"), (1, "not the largest face"), (None, "smaller than min_face_size (20.0 < 30 px)")]
    with pytest.raises(ValueError, match="the region overlap must be between 0 and 1, got 1.5"):
        choose_faces([[a]], min_overlap=1.5)


def test_a_region_mask_restores_only_the_face_it_covers(detector, two_faces):
    region = torch.zeros(1, 600, 1024)
    region[0, 100:500, 600:1000] = 1.0  # over the right face only
    options = PipelineOptions.of(color_correction=False)
    result, report = run_pipeline(two_faces, model=Gray(), detector=detector, options=options, region=region)
    assert report.faces_found == 2 and report.faces_restored == 1
    assert [c.selected for c in report.choices[0]] == [True, False]
    assert report.choices[0][1].reason.startswith("outside the region mask (0% of its box covered")
    assert torch.equal(result.images[..., :512], two_faces[..., :512])  # the left face: not a bit changed
    right = result.mask[0, :, 512:] > 0.99
    assert right.sum() > 100 * 100
    assert (result.images[0, :, :, 512:][:, right] - 0.5).abs().max() < 0.02  # the right face: restored (gray)
    small = torch.nn.functional.interpolate(region[None], size=(60, 102))[0]  # any size: resized to the image's
    _, again = run_pipeline(two_faces, model=Gray(), detector=detector, options=options, region=small)
    assert again.faces_restored == 1 and again.faces.faces[0].box == report.faces.faces[0].box
    with pytest.raises(ValueError, match="region_overlap must be a number from 0 to 1, got -0.1"):
        PipelineOptions.of(region_overlap=-0.1)


@pytest.mark.parametrize("scale", [1, 2])
def test_a_protected_region_is_left_exactly_as_it_was(detector, scale):
    image = load_image(require_shared("faces", "astronaut.png"))  # [1, 3, 512, 512]
    faces = detector.detect(image)[0]
    batch = align_faces(image, faces, size=256)
    batch = dataclasses.replace(batch, restored=torch.full_like(batch.crops, 0.5))
    protect = torch.zeros(1, 512, 512)
    protect[0, 90:115, 190:255] = 1.0  # a hand over the eyes (the face's box is x 178..268, y 63..176)
    plain = paste_faces(batch, options=PasteOptions(color_correction=False, scale=scale))
    kept = paste_faces(batch, protect=protect, options=PasteOptions(color_correction=False, scale=scale))
    s = scale
    inside = (slice(None), slice(None), slice(90 * s, 115 * s), slice(190 * s, 255 * s))
    assert torch.equal(kept.images[inside], plain.images[inside]) is False  # the face is there without protection
    background = torch.nn.functional.interpolate(image, scale_factor=s, mode="bicubic", align_corners=False,
                                                 antialias=True).clamp(0, 1) if s > 1 else image
    assert torch.equal(kept.images[inside], background[inside])  # byte-identical under the hard mask
    assert kept.mask[0, 90 * s:115 * s, 190 * s:255 * s].max() == 0
    # the protection fades outwards over the face mask's feather (0.1 of a ~220 px crop): partly pasted 5 px
    # below the hand, fully 30 px below
    ring, far = kept.mask[0, 120 * s, 222 * s].item(), kept.mask[0, 145 * s, 222 * s].item()
    assert 0 < ring < 0.9 * plain.mask[0, 120 * s, 222 * s].item()
    assert far == pytest.approx(plain.mask[0, 145 * s, 222 * s].item()) and far > 0.9
    with pytest.raises(PasteError, match="the protect mask has 2 masks for 1 images"):
        paste_faces(batch, protect=torch.zeros(2, 512, 512))


def test_keep_weights_fade_outwards_only():
    protect = torch.zeros(60, 60)
    protect[20:40, 20:40] = 1
    keep = keep_weights(protect, (0, 0, 60, 60), width=10)
    assert keep[20:40, 20:40].max() == 0 and keep[:5].min() == 1 and keep[:, :5].min() == 1
    row = keep[30, 40:52]
    assert (row[1:] >= row[:-1]).all() and 0 < row[2] < 1  # rising from 0 at the edge to 1 about 10 px out
    assert torch.equal(keep_weights(torch.zeros(60, 60), (10, 10, 20, 30), width=10), torch.ones(20, 10))
