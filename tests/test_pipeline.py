"""The whole chain on real photos with the reference weights, and the bad inputs users hit."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import require_shared

from face_pipeline.detection import load_detector
from face_pipeline.errors import InvalidImageError
from face_pipeline.image import load_image, to_rgb_float
from face_pipeline.pipeline import PipelineOptions, run_pipeline
from gpen_arch import load_gpen_file


@pytest.fixture(scope="module")
def model():
    return load_gpen_file(require_shared("gpen", "vectors", "gpen_512_cm2_n0.25.pth"))


@pytest.fixture(scope="module")
def detector():
    return load_detector("retinaface_mobile0.25", weights_dir=require_shared("detectors"))


@pytest.fixture(scope="module")
def frames():
    image = load_image(require_shared("faces", "grace_hopper.jpg"))
    return torch.cat([image, torch.roll(image, 6, dims=-1), torch.roll(image, 12, dims=-1)])  # a slow pan


def test_three_frames_through_detect_align_restore_paste(model, detector, frames):
    result, report = run_pipeline(frames, model=model, detector=detector)
    assert report.images == 3 and report.faces_found == 3 and report.faces_restored == 3
    assert result.images.shape == frames.shape and result.mask.shape == (3, 600, 512)
    assert [f.track_id for f in report.faces.faces] == [0, 0, 0]
    for i in range(3):
        inside, outside = result.mask[i] > 0.99, result.mask[i] == 0
        assert (result.images[i][:, inside] - frames[i][:, inside]).abs().mean() > 0.05  # restored (noise weights)
        assert torch.equal(result.images[i][:, outside], frames[i][:, outside])


def test_solvay_group_photo_at_auto_scale(model, detector):
    image = load_image(require_shared("faces", "solvay_conference_1927.png"))
    result, report = run_pipeline(image, model=model, detector=detector,
                                  options=PipelineOptions(scale="auto", max_output_size=3000, batch_size=8))
    assert report.faces_found >= 27 and report.faces_restored == report.faces_found
    assert result.scale == 2 and result.images.shape[-2:] == (1136, 2656)


def test_no_face_comes_back_unchanged_with_a_log_line(model, detector, caplog):
    image = torch.full((1, 3, 64, 80), 0.3)
    with caplog.at_level(logging.INFO, logger="face_pipeline"):
        result, report = run_pipeline(image, model=model, detector=detector)
    assert report.faces_found == 0 and torch.equal(result.images, image)
    assert "no face found" in caplog.text
    result, _ = run_pipeline(image, model=model, detector=detector, options=PipelineOptions(scale=2))
    assert result.images.shape[-2:] == (128, 160)


@pytest.mark.parametrize("kind", ["gray", "rgba", "uint16", "tiny", "border"])
def test_awkward_images(model, detector, kind):
    photo = load_image(require_shared("faces", "grace_hopper.jpg"))
    rgb8 = (photo[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    if kind == "gray":
        image = to_rgb_float(rgb8.mean(-1).astype(np.uint8))
        assert torch.equal(image[0, 0], image[0, 1])
    elif kind == "rgba":
        image = to_rgb_float(np.dstack([rgb8, np.full(rgb8.shape[:2], 128, np.uint8)]))
    elif kind == "uint16":
        image = to_rgb_float(rgb8.astype(np.uint16) * 257)
        assert torch.allclose(image, photo, atol=1e-6)
    elif kind == "tiny":
        image = torch.rand(1, 3, 16, 16)
    else:
        image = photo[:, :, :, 240:]  # half the face cut off by the left border
    result, report = run_pipeline(image, model=model, detector=detector)
    assert result.images.shape == image.shape and torch.isfinite(result.images).all()
    if kind in ("gray", "rgba", "uint16"):
        assert report.faces_restored == 1


def test_8k_frame(model):
    photo = load_image(require_shared("faces", "grace_hopper.jpg"))
    big = F.interpolate(photo, size=(4320, 7680), mode="bilinear", align_corners=False)
    detector = load_detector("yunet_opencv", weights_dir=require_shared("detectors"))
    result, report = run_pipeline(big, model=model, detector=detector, options=PipelineOptions(batch_size=1))
    assert report.faces_restored == 1 and result.images.shape == big.shape


def test_bad_values_are_rejected_clearly():
    with pytest.raises(InvalidImageError, match="NaN or infinite"):
        to_rgb_float(np.full((8, 8, 3), np.nan, np.float32))
    with pytest.raises(InvalidImageError, match=r"0\.\.1; found 255\.\.255 \(was it 0\.\.255"):
        to_rgb_float(np.full((8, 8, 3), 255.0, np.float32))
    with pytest.raises(InvalidImageError, match="channels"):
        to_rgb_float(np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(InvalidImageError, match="empty"):
        to_rgb_float(np.zeros((0, 8, 3), np.uint8))
    with pytest.raises(InvalidImageError, match="2, 3 or 4 dimensions"):
        to_rgb_float(np.zeros((1, 1, 8, 8, 3), np.uint8))
    with pytest.raises(InvalidImageError, match="numpy array or torch tensor"):
        to_rgb_float([[0, 1]])
