"""Detector weight files: where they come from, how they are checked, and where they are looked up.

Weights are looked up by file name in a folder the caller gives (ComfyUI's ``models/facedetection``; the CLI's
``--detector-dir``). The OpenCV YuNet file (0.2 MB, MIT) also ships inside the pack, in ``bundled/`` beside this file
with its licence notice: when the caller's folder does not have it, that copy is used, so the default detector works
on a fresh machine with no download. Any other missing file is downloaded from its official URL into the caller's
folder only when the caller allows it, with a progress bar, and kept only if its sha256 matches. Nothing is ever
written into the pack's own folders or site-packages.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DetectorError, DetectorWeightsCorrupt, DetectorWeightsMissing
from ..weights_file import load_torch_weights

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightFile:
    """One downloadable weight file: its name in the weights folder, official URL, sha256 and size."""

    file_name: str
    url: str
    sha256: str
    size_bytes: int


WEIGHT_FILES: dict[str, WeightFile] = {
    "retinaface_resnet50": WeightFile(
        "detection_Resnet50_Final.pth",
        "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
        "6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
        109_497_761,
    ),
    "retinaface_mobile0.25": WeightFile(
        "detection_mobilenet0.25_Final.pth",
        "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_mobilenet0.25_Final.pth",
        "2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220",
        1_789_735,
    ),
    "yunet": WeightFile(
        "yunet_final.pth",
        "https://github.com/kornia/data/raw/main/yunet_final.pth",
        "ee0a3035c5cbfc9484a31332223c9fd9c0ddcdb7c46b6a19e558ed393b6f2c67",
        405_729,
    ),
    "yunet_opencv": WeightFile(
        "face_detection_yunet_2023mar.onnx",
        "https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx",
        "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
        232_589,
    ),
}


#: Weight files shipped with the pack (the user's folder comes first; these are the fallback for their own file only).
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
BUNDLED_DETECTORS = ("yunet_opencv",)


def bundled_weights(detector: str) -> Path | None:
    """The pack's own copy of ``detector``'s weight file, or None when the pack does not ship one."""
    if detector not in BUNDLED_DETECTORS:
        return None
    path = BUNDLED_DIR / WEIGHT_FILES[detector].file_name
    return path if path.is_file() else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, destination: Path) -> None:
    """Download ``url`` to ``destination`` with a progress bar (replaced in tests)."""
    import urllib.request

    from tqdm import tqdm

    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - fixed https URLs above
        total = int(response.headers.get("Content-Length") or 0) or None
        with open(destination, "wb") as out, tqdm(total=total, unit="B", unit_scale=True,
                                                  desc=destination.name) as bar:
            for chunk in iter(lambda: response.read(1 << 16), b""):
                out.write(chunk)
                bar.update(len(chunk))


def resolve_weights(detector: str, *, weights_dir: str | os.PathLike, allow_download: bool = False) -> Path:
    """The path of ``detector``'s weight file: in ``weights_dir`` if it is there, else the pack's bundled copy (see
    ``BUNDLED_DETECTORS``), else downloaded into ``weights_dir`` first if allowed.

    Raises ``DetectorWeightsMissing`` (naming the file, its URL and the folder) when the file is absent and may not or
    could not be downloaded, ``DetectorWeightsCorrupt`` when it is empty or a download has the wrong sha256 (the
    partial file is removed).
    """
    if detector not in WEIGHT_FILES:
        raise DetectorError(f"no weight file is known for detector {detector!r}; known: {', '.join(WEIGHT_FILES)}")
    spec = WEIGHT_FILES[detector]
    folder = Path(weights_dir)
    path = folder / spec.file_name
    if path.is_file():
        if path.stat().st_size == 0:
            raise DetectorWeightsCorrupt(
                f"{path} is an empty file: delete it and download {spec.url} into {folder} again")
        return path
    bundled = bundled_weights(detector)
    if bundled is not None:
        logger.debug("%s is not in %s: using the copy shipped with the pack, %s", spec.file_name, folder, bundled)
        return bundled
    if not allow_download:
        raise DetectorWeightsMissing(
            f"the {detector} detector needs {spec.file_name}, which is not in {folder}. Download it from {spec.url} "
            f"into {folder} (or allow downloads)."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{spec.file_name}.", suffix=".part", dir=folder)
    except OSError as exc:
        raise DetectorWeightsMissing(
            f"cannot write {spec.file_name} into {folder} ({exc}); download it from {spec.url} by hand and put it "
            f"there"
        ) from exc
    os.close(handle)
    temp = Path(temp_name)
    try:
        logger.info("downloading %s into %s", spec.url, folder)
        try:
            _fetch(spec.url, temp)
        except OSError as exc:  # URLError, HTTPError, timeouts, no network, disk full
            raise DetectorWeightsMissing(
                f"could not download {spec.file_name} from {spec.url} into {folder} ({exc}); download it by hand "
                f"and put it there"
            ) from exc
        digest = sha256_of(temp)
        if digest != spec.sha256:
            raise DetectorWeightsCorrupt(
                f"the download of {spec.file_name} from {spec.url} has sha256 {digest}, expected {spec.sha256}; "
                f"it was discarded: try again, or download it by hand into {folder}"
            )
        temp.replace(path)
        logger.info("saved %s (sha256 verified)", path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def read_detector_state_dict(path: Path, *, what: str) -> dict[str, torch.Tensor]:
    """Read a plain torch state dict safely (``weights_only=True``), ``module.`` prefixes stripped.

    A damaged, truncated or foreign file raises ``DetectorWeightsCorrupt`` saying which it is."""
    url = next((spec.url for spec in WEIGHT_FILES.values() if spec.file_name == path.name), None)
    hint = f"from {url} into {path.parent}" if url else f"into {path.parent}"
    state = load_torch_weights(path, download_hint=hint, error=DetectorWeightsCorrupt)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DetectorWeightsCorrupt(
            f"{path} does not hold a {what} state dict (found {type(state).__name__}); is it the right file? "
            f"Delete it and download it again")
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}


def load_strict(network: torch.nn.Module, state: dict[str, torch.Tensor], *, path: Path, what: str) -> None:
    """``network.load_state_dict(state, strict=True)``; a file of another network raises ``DetectorWeightsCorrupt``."""
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DetectorWeightsCorrupt(
            f"{path} does not fit the {what} network ({str(exc).splitlines()[0][:200]}); is it the right file? "
            f"Delete it and download it again"
        ) from exc
