"""Detection on the shared photos with real weights, weight handling, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import require_shared

from face_pipeline.detection import DETECTOR_NAMES, WEIGHT_FILES, load_detector, weights
from face_pipeline.errors import DetectorError, DetectorWeightsCorrupt, DetectorWeightsMissing, InvalidImageError
from face_pipeline.image import load_image

BACKENDS = ["retinaface_mobile0.25", "yunet", "yunet_opencv"]  # those whose weights are in ../shared/detectors
SINGLE = ["astronaut.png", "grace_hopper.jpg", "pexels_woman_large_face.jpeg"]


@pytest.fixture(scope="module")
def photos():
    return {name: load_image(require_shared("faces", name))
            for name in SINGLE + ["solvay_conference_1927.png"]}


@pytest.fixture(scope="module", params=BACKENDS)
def detector(request):
    return load_detector(request.param, weights_dir=require_shared("detectors"))


@pytest.fixture(scope="module")
def single_face_landmarks(photos):
    found = {}
    for backend in BACKENDS:
        det = load_detector(backend, weights_dir=require_shared("detectors"))
        found[backend] = {name: det.detect(photos[name])[0] for name in SINGLE}
    return found


@pytest.mark.parametrize("name", SINGLE)
def test_exactly_one_face_on_single_face_photos(single_face_landmarks, name):
    for backend, per_photo in single_face_landmarks.items():
        assert len(per_photo[name]) == 1, f"{backend} found {len(per_photo[name])} faces on {name}"


def test_solvay_faces(detector, photos):
    faces = detector.detect(photos["solvay_conference_1927.png"])[0]
    assert 27 <= len(faces) <= 31, f"{detector.name}: {len(faces)} faces"


@pytest.mark.parametrize("name", SINGLE)
def test_landmarks_agree_between_backends(single_face_landmarks, name):
    reference = single_face_landmarks["retinaface_mobile0.25"][name][0]
    iod = reference.inter_ocular
    for backend in ("yunet", "yunet_opencv"):
        other = single_face_landmarks[backend][name][0]
        error = np.linalg.norm(other.landmarks_array() - reference.landmarks_array(), axis=1).max()
        assert error < 0.2 * iod, f"{backend} on {name}: {error:.1f} px, inter-ocular {iod:.1f} px"


def test_landmark_order_is_left_eye_right_eye_nose_mouth(single_face_landmarks):
    for per_photo in single_face_landmarks.values():
        for faces in per_photo.values():
            (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = faces[0].landmarks
            assert lx < nx < rx and mlx < mrx and max(ly, ry) < ny < min(mly, mry)


def test_batched_detection_sets_image_index(photos):
    det = load_detector("yunet_opencv", weights_dir=require_shared("detectors"))
    a = photos["astronaut.png"]
    batch = torch.cat([a, torch.zeros_like(a), a.flip(-1)])
    found = det.detect(batch)
    assert [len(f) for f in found] == [1, 0, 1]
    assert found[2][0].image_index == 2
    x1, _, x2, _ = found[0][0].box
    fx1, _, fx2, _ = found[2][0].box
    assert abs((x1 + x2) / 2 - (512 - (fx1 + fx2) / 2)) < 8  # the mirrored face is found mirrored


def test_large_frame_is_detected_on_a_downscaled_copy(photos):
    det = load_detector("yunet_opencv", weights_dir=require_shared("detectors"))
    image = photos["grace_hopper.jpg"]
    big = F.interpolate(image, scale_factor=12.8, mode="bilinear", align_corners=False)  # 6554 x 7680
    small_face = det.detect(image)[0][0]
    big_face = det.detect(big)[0]
    assert len(big_face) == 1
    error = np.abs(big_face[0].landmarks_array() / 12.8 - small_face.landmarks_array()).max()
    assert error < 0.2 * small_face.inter_ocular  # the face is ~4x larger at the working size: YuNet is less exact


def test_tiny_and_bad_images(photos):
    det = load_detector("yunet_opencv", weights_dir=require_shared("detectors"))
    assert det.detect(torch.rand(1, 3, 16, 16)) == [[]]
    assert det.detect(torch.rand(2, 3, 8, 300)) == [[], []]
    with pytest.raises(InvalidImageError, match="NaN"):
        det.detect(torch.full((1, 3, 64, 64), float("nan")))
    with pytest.raises(InvalidImageError, match=r"expects images \[B, 3, H, W\]"):
        det.detect(torch.rand(1, 4, 64, 64))
    with pytest.raises(InvalidImageError, match=r"expects images \[B, 3, H, W\]"):
        det.detect(torch.rand(64, 64, 3))
    with pytest.raises(InvalidImageError, match="float images"):
        det.detect(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_face_cut_by_the_border(photos):
    det = load_detector("yunet_opencv", weights_dir=require_shared("detectors"))
    image = photos["grace_hopper.jpg"][:, :, :, 250:]  # the right half of the face only
    faces = det.detect(image)[0]
    assert len(faces) <= 1  # found or not, never a crash; landmarks may lie outside the image


def test_resnet50_loads_from_the_folder(tmp_path):
    from facexlib.detection.retinaface import RetinaFace

    torch.manual_seed(0)
    state = RetinaFace(network_name="resnet50", half=False, device="cpu").state_dict()
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "detection_Resnet50_Final.pth")
    det = load_detector("retinaface_resnet50", weights_dir=tmp_path)
    assert det.name == "retinaface_resnet50"
    assert isinstance(det.detect(torch.rand(1, 3, 64, 64)), list)


def test_missing_weights_name_file_url_and_folder(tmp_path):
    spec = WEIGHT_FILES["retinaface_resnet50"]
    with pytest.raises(DetectorWeightsMissing) as info:
        load_detector("retinaface_resnet50", weights_dir=tmp_path, allow_download=False)
    message = str(info.value)
    assert spec.file_name in message and spec.url in message and str(tmp_path) in message


def test_unknown_detector(tmp_path):
    with pytest.raises(DetectorError, match="unknown detector 'mtcnn'"):
        load_detector("mtcnn", weights_dir=tmp_path)
    assert len(DETECTOR_NAMES) == 4


def test_download_is_verified(tmp_path, monkeypatch):
    source = require_shared("detectors", "yunet_final.pth")
    monkeypatch.setattr(weights, "_fetch", lambda url, dest: dest.write_bytes(source.read_bytes()))
    det = load_detector("yunet", weights_dir=tmp_path / "new", allow_download=True)
    assert (tmp_path / "new" / "yunet_final.pth").is_file() and det.name == "yunet"

    monkeypatch.setattr(weights, "_fetch", lambda url, dest: dest.write_bytes(b"not the file"))
    with pytest.raises(DetectorWeightsCorrupt, match="has sha256 .* expected 8f2383e4"):
        load_detector("yunet_opencv", weights_dir=tmp_path / "bad", allow_download=True)
    assert list((tmp_path / "bad").iterdir()) == []  # the partial download is gone

    def offline(url, dest):
        raise OSError("network is unreachable")

    monkeypatch.setattr(weights, "_fetch", offline)
    with pytest.raises(DetectorWeightsMissing, match=r"could not download .*\(network is unreachable\)"):
        load_detector("retinaface_mobile0.25", weights_dir=tmp_path / "off", allow_download=True)


@pytest.mark.parametrize("backend", BACKENDS + ["retinaface_resnet50"])
def test_corrupt_weights_have_their_own_message(tmp_path, backend):
    spec = WEIGHT_FILES[backend]
    (tmp_path / spec.file_name).write_bytes(b"\x00garbage" * 100)
    with pytest.raises(DetectorWeightsCorrupt, match="delete it and download it again"):
        load_detector(backend, weights_dir=tmp_path)


def test_empty_weight_file(tmp_path):
    (tmp_path / "yunet_final.pth").write_bytes(b"")
    with pytest.raises(DetectorWeightsCorrupt, match="empty file"):
        load_detector("yunet", weights_dir=tmp_path)
