"""Golden outputs: the CLI's files (both engines) and the nodes' pixels are byte-identical to those the pack gave
before the issue-24 restructuring (main at 6043ddb, torch 2.14.1 on the CPU, one thread for the nodes' graphs). A
refactor that changes a single byte of an output fails here; a deliberate change of the outputs updates the hashes
with the reason in its commit message (so far: issue 26 wrote faces.json unrounded; issue 25 added each face's "model",
and smoothed video frames over time by default: the hashes of before hold with --temporal-smoothing 0).

The model is the compact 256 vector of tests/data (random weights: the faces are noise, but every stage runs)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import DETECT, REPO_ROOT, comfy_image, data_file, node

MODEL = data_file("gpen", "compact", "compact_256_cm1_n0.0625_s64.safetensors")
OFFLINE = dict(os.environ, http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", no_proxy="", NO_PROXY="")

PHOTOS = {  # default options
    "astronaut.jpg": "708f8f17a861306c21c966873e4fb303d4a682b407c161c023901423cda208d2",
    "grace_hopper.jpg": "cc14c1edb087656456eb77a38e52793b701b2c9427645369dbfae73c134c75ef",
}
PHOTOS_WITH_SIDES = {  # --scale 2 --mask ellipse --feather 0.2 --strength 0.7 --save-json --save-crops --save-annotated
    "annotated/astronaut.jpg.png": "e114659b14eb740b1673903256668562aa50d27857b0fa15b2f8d45b304bfa81",
    "annotated/grace_hopper.jpg.png": "6ba88ade0d49d3ff848003dbc761b74e3f81955b4c8025f5208fb8d4c3406ee9",
    "astronaut.jpg": "907deaac7a6e852cefbe3e867aa602eef1901552c3ee57a007a632047e3b386e",
    "crops/astronaut.jpg_face0_aligned.png": "2b4614ce46205daf79735346e6de19b88d629946d57ba4ccece9ffffd1db7e37",
    "crops/astronaut.jpg_face0_restored.png": "64b56a05e3f837389010426a49d61aff6343e4ff8241d44ec7519cae981144ff",
    "crops/grace_hopper.jpg_face0_aligned.png": "82c2c48fcf99002efcd9703f7bbcde20ed8d510f8388cda53a0a58e5f130f1d6",
    "crops/grace_hopper.jpg_face0_restored.png": "4ee108b2d05350cb8fb68bb10fc352e07ed56f5a1aad4f36a978fbc2adb77f82",
    "faces.json": "f89280dba65bac6ead6a8474df81a8164d1d6d4acb73b1febd784efa511af6ad",
    "grace_hopper.jpg": "a33a4a3aba40781ed3b2f90c0d3924eb91eabbad075e5ab2431f78988c1b7227",
}
SIDE_FLAGS = ("--scale", "2", "--mask", "ellipse", "--feather", "0.2", "--strength", "0.7", "--save-json",
              "--save-crops", "--save-annotated")
FRAMES = {  # --video-frames --save-json --temporal-smoothing 0 over grace_hopper.jpg panned 3 px per frame
    "f000.png": "11a7b0a499218d4d391097a282337673e802f8cade875977531e56e9a5178e68",
    "f001.png": "2160d6e401721914033ee1938c4101168c74a9bb2a572eafcf1dcc29ede745e3",
    "f002.png": "be4369a80927cefd80f0598126625d90ab4d2c714dcb8580d8e3036b8fae2e70",
    "f003.png": "842d5de5bfdf912b10655e7b81134224ddda2c6dd68edb54d07d589b931aa318",
    "faces.json": "1ba7b8b596cf16303b824f3b1d7197ea5013b7f5a96dda92a26cb07e1fb2a8f0",
}
SMOOTHED_FRAMES = {  # the same with the default temporal smoothing (issue 25): the first frame as without it
    **FRAMES,
    "f001.png": "01438485d006b6cbf860883b4fa6ed0dfd94357eae5fe3e3050e72be6c056cc3",
    "f002.png": "568623a90b24d4b9e89c6c692032b9543dbac9a004e9001ba535ec75a27249ee",
    "f003.png": "b7ed6215d21a4b99afff507938d32c029301b18859163a3f41fafef8557055b2",
}
NOT_SMOOTHED = ("--temporal-smoothing", "0")


def hashes(folder: Path) -> dict[str, str]:
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file() and not path.name.startswith(".gpen")}


def run_cli(inputs: Path, out: Path, *flags: str) -> dict[str, str]:
    done = subprocess.run([sys.executable, str(REPO_ROOT / "cli.py"), str(inputs), "--model", str(MODEL),
                           "--output", str(out), "--detector-dir", str(out.parent / "no-detectors"),
                           "--no-download", *flags], capture_output=True, text=True, timeout=600, env=OFFLINE)
    assert done.returncode == 0, done.stderr
    return hashes(out)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        (folder / name).write_bytes(data_file("faces", name).read_bytes())
    return folder


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("frames")
    image = cv2.imread(str(data_file("faces", "grace_hopper.jpg")))
    for i in range(4):
        cv2.imwrite(str(folder / f"f{i:03d}.png"), np.roll(image, 3 * i, axis=1))
    return folder


def test_cli_photos(photos, tmp_path):
    assert run_cli(photos, tmp_path / "out") == PHOTOS


def test_cli_photos_with_side_outputs(photos, tmp_path):
    assert run_cli(photos, tmp_path / "out", *SIDE_FLAGS) == PHOTOS_WITH_SIDES


def test_cli_video_frames(frames, tmp_path):
    assert run_cli(frames, tmp_path / "out", "--video-frames", "--save-json", *NOT_SMOOTHED) == FRAMES
    assert run_cli(frames, tmp_path / "smoothed", "--video-frames", "--save-json") == SMOOTHED_FRAMES


def test_cli_ray_engine(photos, frames, tmp_path):
    pytest.importorskip("ray", reason="[ray] the Ray engine needs ray[data] (requirements-test.txt)")
    assert run_cli(photos, tmp_path / "photos", *SIDE_FLAGS, "--engine", "ray") == PHOTOS_WITH_SIDES
    assert run_cli(frames, tmp_path / "frames", "--video-frames", "--save-json", "--engine", "ray") == SMOOTHED_FRAMES


# ---------------------------------------------------------------------------------------------- the nodes' pixels
NODES = {  # the all-in-one node and the step nodes on two photos batched (restore at 0.7; paste ellipse, 2x)
    "all_in_one.image": "3d464c2561627264fe0a536a9fa600b62f2a3a46fcc761e9469e8a7574d4b6cf",
    "all_in_one.mask": "800047cf8117c5964c6df8c937d35d737a23141939e782ae608710367dba7b53",
    "detect.crops": "26c99d5a7423567a4e9f74025ac7aed1d7b0b436f686b424fbb6fa05045daa89",
    "paste.image": "88fb38d4b2f31da6a88adce400dc7be49f8c7a28ae963c3a4fe55d44e292d956",
    "paste.mask": "5bc3e80050c6b3da9d21e45e14afd86035e18ff3f9b9aafeaa99c0d5ca0957ce",
    "restore.preview": "2e39a7e25488e7f9be9fcbc187bded666a29a27c9c23c988c16fa673e91e698f",
}


def tensor_hash(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def node_outputs(pack, gpen_model, detector) -> dict[str, str]:
    paste = dict(mask_type="rounded_rect", feather=0.1, color_correction=True, output_scale="1",
                 max_output_size=8192)
    batch = torch.cat([comfy_image(name, size=(512, 448)) for name in ("grace_hopper.jpg", "astronaut.jpg")])
    image, mask, *_ = node(pack, "GPENFaceRestore").run(image=batch, gpen_model=gpen_model, face_detector=detector,
                                                    select="all", strength=1.0, template="gpen", **paste)
    faces, crops, _count, *_ = node(pack, "GPENDetectFaces").detect(image=batch, face_detector=detector, **DETECT)
    restored, preview, *_ = node(pack, "GPENRestoreFaces").restore(gpen_model=gpen_model, faces=faces, mode="restore",
                                                               strength=0.7)
    pasted, pasted_mask, *_ = node(pack, "GPENPasteFaces").paste(
        image=batch, faces=restored, **{**paste, "mask_type": "ellipse", "feather": 0.2, "output_scale": "2"},
        keep_gray=False)
    return {"all_in_one.image": tensor_hash(image), "all_in_one.mask": tensor_hash(mask),
            "detect.crops": tensor_hash(crops), "restore.preview": tensor_hash(preview),
            "paste.image": tensor_hash(pasted), "paste.mask": tensor_hash(pasted_mask)}


def test_node_graph_outputs(pack, gpen_model, detector, one_thread, like_comfyui):
    assert node_outputs(pack, gpen_model, detector) == NODES
