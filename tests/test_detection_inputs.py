"""Bad inputs reach ``detect`` as clear ``InvalidImageError`` (a ``ValueError``) or as empty results, never as a crash
inside OpenCV or torch."""

from __future__ import annotations

import pytest
import torch
from conftest import data_file

from face_pipeline.detection import load_detector
from face_pipeline.errors import InvalidImageError

BACKENDS = ["retinaface_mobile0.25", "yunet", "yunet_opencv"]


@pytest.fixture(scope="module", params=BACKENDS)
def detector(request):
    return load_detector(request.param, weights_dir=data_file("detectors"))


def test_tiny_and_empty_images_have_no_faces(detector):
    assert detector.detect(torch.rand(1, 3, 16, 16)) == [[]]
    assert detector.detect(torch.rand(2, 3, 8, 300)) == [[], []]
    assert detector.detect(torch.rand(1, 3, 20, 3000)) == [[]]  # the working copy would be 8 px high
    assert detector.detect(torch.rand(0, 3, 64, 64)) == []
    assert detector.detect(torch.rand(1, 3, 0, 64)) == [[]]


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.full((1, 3, 64, 64), float("nan")), "NaN or infinite"),
        (torch.tensor(float("inf")).expand(1, 3, 32, 32), "NaN or infinite"),
        (torch.rand(1, 4, 64, 64), r"expects images \[B, 3, H, W\].*got shape \[1, 4, 64, 64\] \(4 channels"),
        (torch.rand(1, 64, 64, 3), r"got shape \[1, 64, 64, 3\] \(this looks like \[B, H, W, C\]"),
        (torch.rand(3, 64, 64), r"got shape \[3, 64, 64\] \(a single image: add the batch dimension"),
        (torch.rand(1, 1, 3, 64, 64), r"expects images \[B, 3, H, W\]"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "float images in 0..1, got torch.uint8"),
        (torch.rand(1, 3, 64, 64) * 255, r"found .*\.\.2\d\d \(this looks like 0\.\.255"),
        (torch.rand(1, 3, 64, 64).numpy(), "expects a torch.Tensor"),
    ],
)
def test_bad_images_raise_clear_errors(detector, images, message):
    with pytest.raises(InvalidImageError, match=message) as info:
        detector.detect(images)
    assert isinstance(info.value, ValueError)


def test_nan_in_one_image_of_a_batch(detector):
    images = torch.rand(2, 3, 64, 64)
    images[1, 0, 5, 5] = float("nan")
    with pytest.raises(InvalidImageError, match="NaN"):
        detector.detect(images)


def test_slight_overshoot_and_other_float_types_are_accepted(detector):
    image = torch.rand(1, 3, 64, 64) * 1.02 - 0.01
    assert detector.detect(image) == [[]]
    assert detector.detect(torch.rand(1, 3, 64, 64, dtype=torch.float16)) == [[]]
    assert detector.detect(torch.rand(1, 3, 64, 64, dtype=torch.float64)) == [[]]


def test_threshold_is_checked(detector):
    with pytest.raises(ValueError, match="score_threshold must be in 0..1, got 2"):
        detector.detect(torch.rand(1, 3, 64, 64), score_threshold=2)
    with pytest.raises(ValueError, match="max_side must be at least 64"):
        load_detector(detector.name, weights_dir=data_file("detectors"), max_side=10)
