"""Detection on real photos with the real weights (tests/data/detectors and the bundled OpenCV YuNet): counts,
landmarks, batches, big frames. The group photo and the very large face are big data (../shared/faces)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import data_file, require_shared

from face_pipeline.detection import load_detector
from face_pipeline.image import load_image

BACKENDS = ["retinaface_mobile0.25", "yunet", "yunet_opencv"]  # those whose weights are small enough to ship
LARGE_FACE = "pexels_woman_large_face.jpeg"
SINGLE = ["astronaut.jpg", "grace_hopper.jpg", LARGE_FACE]
SOLVAY = "solvay_conference_1927.png"
BIG = (LARGE_FACE, SOLVAY)  # ../shared/faces; the others are in tests/data/faces


@pytest.fixture(scope="module")
def photo():
    """name -> [1, 3, H, W] image, each read once."""
    cache = {}

    def get(name: str) -> torch.Tensor:
        if name not in cache:
            cache[name] = load_image(require_shared("faces", name) if name in BIG else data_file("faces", name))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def detectors():
    return {name: load_detector(name, weights_dir=data_file("detectors")) for name in BACKENDS}


@pytest.fixture(scope="module")
def found(detectors, photo):
    """(backend, photo name) -> the faces on that photo (each photo detected once per backend)."""
    cache = {}

    def get(backend: str, name: str) -> list:
        if (backend, name) not in cache:
            cache[backend, name] = detectors[backend].detect(photo(name))[0]
        return cache[backend, name]

    return get


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", SINGLE)
def test_exactly_one_face_on_single_face_photos(found, backend, name):
    faces = found(backend, name)
    assert len(faces) == 1, f"{backend} found {len(faces)} faces on {name}: {[f.box for f in faces]}"
    assert faces[0].image_index == 0 and faces[0].score >= 0.6


@pytest.mark.parametrize("backend", BACKENDS)
def test_solvay_small_faces(found, backend):
    faces = found(backend, SOLVAY)
    assert 27 <= len(faces) <= 30, f"{backend}: {len(faces)} faces on the 29-face Solvay photo"
    sizes = np.array([max(f.width, f.height) for f in faces])
    assert 20 < np.median(sizes) < 60  # the 25-40 px faces, in the original pixels
    scores = [f.score for f in faces]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("name", SINGLE)
def test_landmarks_agree_between_backends(found, name):
    reference = found("retinaface_mobile0.25", name)[0]
    iod = reference.inter_ocular
    assert iod > 20
    for backend in ("yunet", "yunet_opencv"):
        other = found(backend, name)[0]
        error = np.linalg.norm(other.landmarks_array() - reference.landmarks_array(), axis=1).max()
        assert error < 0.2 * iod, f"{backend} on {name}: {error:.1f} px, inter-ocular {iod:.1f} px"


def test_solvay_faces_agree_between_backends(found):
    reference = np.array([f.landmarks_array().mean(0) for f in found("yunet_opencv", SOLVAY)])
    for backend in ("retinaface_mobile0.25", "yunet"):
        centres = np.array([f.landmarks_array().mean(0) for f in found(backend, SOLVAY)])
        distance = np.linalg.norm(centres[:, None] - reference[None], axis=-1).min(1)
        assert (distance < 8).mean() >= 0.9, f"{backend}: {np.sort(distance)[-5:]}"


@pytest.mark.parametrize("name", SINGLE)
def test_landmark_order_is_left_eye_right_eye_nose_mouth(found, name):
    for backend in BACKENDS:
        (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = found(backend, name)[0].landmarks
        assert lx < nx < rx and mlx < mrx and max(ly, ry) < ny < min(mly, mry), (backend, name)
        x1, y1, x2, y2 = found(backend, name)[0].box
        assert x1 < lx < rx < x2 and y1 < ly < mly < y2, (backend, name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_detection_sets_image_index(detectors, photo, backend):
    a = photo("astronaut.jpg")
    batch = torch.cat([a, torch.zeros_like(a), a.flip(-1)])
    result = detectors[backend].detect(batch)
    assert [len(f) for f in result] == [1, 0, 1]
    assert result[0][0].image_index == 0 and result[2][0].image_index == 2
    (lx, ly), (rx, ry) = result[0][0].landmarks[:2]
    (mlx, mly), (mrx, mry) = result[2][0].landmarks[:2]
    # the mirrored face is found mirrored: its left eye is the original right eye (x -> 511 - x)
    assert abs((511 - mrx) - lx) < 6 and abs(mry - ly) < 6 and abs((511 - mlx) - rx) < 6
    single = detectors[backend].detect(a)[0][0]
    assert np.abs(single.landmarks_array() - result[0][0].landmarks_array()).max() < 0.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_close_up_face_is_one_box(detectors, photo, backend):
    # the large face cropped tightly and scaled up to 1024 px: a ~750 px face, larger than any backend handles at
    # once (kornia's YuNet splits it into up to six boxes); the coarse passes must find it as one face
    ref = photo(LARGE_FACE)[:, :, 330:915, 245:730]
    close_up = F.interpolate(ref, size=(1024, 849), mode="bilinear", antialias=False, align_corners=False)
    faces = detectors[backend].detect(close_up.clamp(0, 1))[0]
    assert len(faces) == 1, [(f.box, f.score) for f in faces]
    assert faces[0].width > 500 and faces[0].inter_ocular > 200


def test_8k_frame_is_detected_on_a_downscaled_copy(detectors, photo, found):
    image = photo("grace_hopper.jpg")  # 600 x 512 -> 7680 x 6554
    big = F.interpolate(image, size=(7680, 6554), mode="nearest")
    faces = detectors["yunet_opencv"].detect(big)[0]
    assert len(faces) == 1
    reference = found("yunet_opencv", "grace_hopper.jpg")[0]
    error = np.abs(faces[0].landmarks_array() / 12.8 - reference.landmarks_array()).max()
    assert error < 0.15 * reference.inter_ocular  # mapped back into the 8K frame's pixels


def test_max_side_keeps_small_faces_on_large_frames(detectors, photo):
    # Solvay at 3x (3984 px wide): OpenCV's default first pass (1920 px) keeps its faces at ~40 px and finds them;
    # with max_side=320 they shrink to ~8 px and are lost: the option is honoured
    big = F.interpolate(photo(SOLVAY), scale_factor=3, mode="nearest")
    default = detectors["yunet_opencv"].detect(big)[0]
    assert len(default) >= 27
    coarse = load_detector("yunet_opencv", weights_dir=data_file("detectors"), max_side=320).detect(big)[0]
    assert len(coarse) < 10
    for face in default:  # coordinates are in the 3x frame's pixels
        assert 0 <= face.box[0] < face.box[2] <= big.shape[-1] + 5


def test_score_threshold_override(detectors, photo):
    det = detectors["yunet_opencv"]
    image = photo(SOLVAY)
    low = det.detect(image, score_threshold=0.3)[0]
    high = det.detect(image, score_threshold=0.99)[0]
    assert len(high) == 0 < len(low) and all(f.score >= 0.3 for f in low)
    strict = load_detector("retinaface_mobile0.25", weights_dir=data_file("detectors"), score_threshold=0.999)
    assert strict.score_threshold == 0.999 and all(f.score >= 0.999 for f in strict.detect(image)[0])
    assert detectors["retinaface_mobile0.25"].score_threshold == 0.9
    assert detectors["yunet"].score_threshold == 0.9 and detectors["yunet_opencv"].score_threshold == 0.6


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_faces_on_blank_noisy_or_smooth_frames(detectors, backend):
    torch.manual_seed(0)
    frames = torch.cat([
        torch.zeros(1, 3, 512, 512),  # a fade to black
        torch.full((1, 3, 512, 512), 0.5),
        torch.rand(1, 3, 512, 512),
        torch.linspace(0, 1, 512).view(1, 1, 1, 512).expand(1, 3, 512, 512),
    ])
    assert detectors[backend].detect(frames) == [[], [], [], []]
