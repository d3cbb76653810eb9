"""Detector weight files: the table, lookup in a folder, the bundled YuNet, verified download (no network), damaged
files."""

from __future__ import annotations

import hashlib
import warnings

import pytest
import torch
from conftest import data_file

from face_pipeline.detection import DETECTOR_NAMES, WEIGHT_FILES, load_detector, weights
from face_pipeline.errors import DetectorError, DetectorWeightsCorrupt, DetectorWeightsMissing

SMALL_FILES = ["retinaface_mobile0.25", "yunet", "yunet_opencv"]  # in tests/data/detectors, or bundled with the pack


def small_file(detector: str):
    """The real weight file of a small detector: the pack's own copy of OpenCV YuNet, the others from tests/data."""
    return weights.bundled_weights(detector) or data_file("detectors", WEIGHT_FILES[detector].file_name)


def test_table_covers_every_detector():
    assert set(WEIGHT_FILES) == set(DETECTOR_NAMES)
    resnet = WEIGHT_FILES["retinaface_resnet50"]
    assert resnet.file_name == "detection_Resnet50_Final.pth"
    assert resnet.url == "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth"
    assert resnet.sha256.startswith("6d1de9c2")
    assert WEIGHT_FILES["yunet"].url == "https://github.com/kornia/data/raw/main/yunet_final.pth"


@pytest.mark.parametrize("detector", SMALL_FILES)
def test_real_files_match_the_table(detector):
    spec = WEIGHT_FILES[detector]
    path = small_file(detector)
    assert path.name == spec.file_name
    assert path.stat().st_size == spec.size_bytes
    assert weights.sha256_of(path) == spec.sha256


def test_resnet50_loads_from_the_folder(tmp_path):
    from facexlib.detection.retinaface import RetinaFace

    torch.manual_seed(0)
    with warnings.catch_warnings():  # torchvision's notice about facexlib's resnet50(pretrained=False)
        warnings.simplefilter("ignore", UserWarning)
        state = RetinaFace(network_name="resnet50", half=False, device="cpu").state_dict()
    # the released file's keys carry DataParallel's "module." prefix
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "detection_Resnet50_Final.pth")
    det = load_detector("retinaface_resnet50", weights_dir=tmp_path)
    assert det.name == "retinaface_resnet50" and det.score_threshold == 0.9
    loaded = det.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    result = det.detect(torch.rand(2, 3, 64, 80))
    assert len(result) == 2 and all(f.image_index == i for i, faces in enumerate(result) for f in faces)
    assert list(tmp_path.iterdir()) == [tmp_path / "detection_Resnet50_Final.pth"]  # nothing downloaded beside it


def test_resnet50_uses_the_official_working_size(tmp_path):
    from face_pipeline.detection.retinaface import RetinaFaceDetector

    det = RetinaFaceDetector.__new__(RetinaFaceDetector)
    det.max_side = None
    assert [det.first_side(s) for s in (512, 1500, 1501, 7680)] == [512, 1500, 1000, 1000]
    det.max_side = 2000
    assert [det.first_side(s) for s in (512, 7680)] == [512, 2000]


def test_missing_weights_name_file_url_and_folder(tmp_path):
    spec = WEIGHT_FILES["retinaface_resnet50"]
    with pytest.raises(DetectorWeightsMissing) as info:
        load_detector("retinaface_resnet50", weights_dir=tmp_path, allow_download=False)
    message = str(info.value)
    assert spec.file_name in message and spec.url in message and str(tmp_path) in message
    assert list(tmp_path.iterdir()) == []


def test_unknown_detector(tmp_path):
    with pytest.raises(DetectorError, match="unknown detector 'mtcnn'; choose one of retinaface_resnet50"):
        load_detector("mtcnn", weights_dir=tmp_path)


def test_the_bundled_yunet_is_the_fallback_for_its_own_file_only(tmp_path, monkeypatch):
    def no_network(url, destination):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(weights, "_fetch", no_network)
    bundled = weights.bundled_weights("yunet_opencv")
    assert weights.BUNDLED_DETECTORS == ("yunet_opencv",) and bundled.parent.name == "bundled"
    assert "MIT License\n\nCopyright (c) 2020 Shiqi Yu" in (bundled.parent / "LICENSE-yunet.txt").read_text()
    for allow_download in (False, True):  # the shipped copy is used before any download
        assert weights.resolve_weights("yunet_opencv", weights_dir=tmp_path / "none",
                                       allow_download=allow_download) == bundled
    det = load_detector("yunet_opencv", weights_dir=tmp_path / "none")
    assert det.name == "yunet_opencv" and not (tmp_path / "none").exists()
    user = tmp_path / "user"  # the user's folder comes first: their copy (here an empty, broken one) is the one read
    user.mkdir()
    (user / "face_detection_yunet_2023mar.onnx").write_bytes(b"")
    with pytest.raises(DetectorWeightsCorrupt, match="is an empty file"):
        load_detector("yunet_opencv", weights_dir=user)
    assert weights.bundled_weights("yunet") is None  # the other detectors are never taken from the pack
    with pytest.raises(DetectorWeightsMissing, match="yunet_final.pth, which is not in"):
        load_detector("yunet", weights_dir=tmp_path / "none")


def test_download_is_verified(tmp_path, monkeypatch):
    source = data_file("detectors", "yunet_final.pth")
    calls = []

    def fake_fetch(url, destination):
        calls.append(url)
        destination.write_bytes(source.read_bytes())

    monkeypatch.setattr(weights, "_fetch", fake_fetch)
    det = load_detector("yunet", weights_dir=tmp_path / "new", allow_download=True)
    assert calls == [WEIGHT_FILES["yunet"].url] and det.name == "yunet"
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["yunet_final.pth"]
    load_detector("yunet", weights_dir=tmp_path / "new", allow_download=True)
    assert len(calls) == 1  # present now: not fetched again

    monkeypatch.setattr(weights, "_fetch", lambda url, dest: dest.write_bytes(b"not the file"))
    wrong = hashlib.sha256(b"not the file").hexdigest()
    with pytest.raises(DetectorWeightsCorrupt, match=f"has sha256 {wrong}, expected 2979b33f.*discarded"):
        load_detector("retinaface_mobile0.25", weights_dir=tmp_path / "bad", allow_download=True)
    assert list((tmp_path / "bad").iterdir()) == []  # the partial download is gone


def test_offline_download_names_file_url_and_folder(tmp_path, monkeypatch):
    def offline(url, destination):
        destination.write_bytes(b"half a fi")
        raise OSError("network is unreachable")

    monkeypatch.setattr(weights, "_fetch", offline)
    spec = WEIGHT_FILES["retinaface_resnet50"]
    with pytest.raises(DetectorWeightsMissing, match=r"could not download .*\(network is unreachable\)") as info:
        load_detector("retinaface_resnet50", weights_dir=tmp_path, allow_download=True)
    assert spec.file_name in str(info.value) and spec.url in str(info.value) and str(tmp_path) in str(info.value)
    assert list(tmp_path.iterdir()) == []


def _truncated(name: str, fraction: float = 0.5) -> bytes:
    data = small_file(name).read_bytes()
    return data[: int(len(data) * fraction)]


@pytest.mark.parametrize("detector", SMALL_FILES + ["retinaface_resnet50"])
@pytest.mark.parametrize("content", ["random", "truncated", "text"])
def test_corrupt_weights_have_their_own_message(tmp_path, detector, content):
    if content == "random":
        data = torch.randint(0, 256, (5000,), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
        data = data.numpy().tobytes()
    elif content == "truncated":
        data = _truncated("yunet_opencv" if detector == "yunet_opencv" else "retinaface_mobile0.25")
    else:
        data = b"<html>404: Not Found</html>"
    (tmp_path / WEIGHT_FILES[detector].file_name).write_bytes(data)
    with pytest.raises(DetectorWeightsCorrupt, match="delete it and download it again") as info:
        load_detector(detector, weights_dir=tmp_path)
    assert "weights_only" not in str(info.value) and "trust" not in str(info.value)
    if content == "text":  # a failed download: said so, with where to download the file
        assert "looks like an HTML page" in str(info.value) and WEIGHT_FILES[detector].url in str(info.value)


@pytest.mark.parametrize("detector", ["retinaface_resnet50", "yunet"])
def test_wrong_network_file(tmp_path, detector):
    # a readable state dict of another network under this detector's name
    (tmp_path / WEIGHT_FILES[detector].file_name).write_bytes(
        small_file("retinaface_mobile0.25").read_bytes())
    with pytest.raises(DetectorWeightsCorrupt, match="does not fit .* is it the right file"):
        load_detector(detector, weights_dir=tmp_path)


def test_empty_weight_file(tmp_path):
    (tmp_path / "yunet_final.pth").write_bytes(b"")
    with pytest.raises(DetectorWeightsCorrupt, match="is an empty file"):
        load_detector("yunet", weights_dir=tmp_path)
