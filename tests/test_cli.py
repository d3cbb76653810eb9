"""cli.py run as a user runs it (subprocesses), and its error paths (in-process, faster). The model is a compact
vector (tests/data, random weights at reduced width: the "restored" face is noise, but every stage runs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT, data_file

MODEL_256 = ("gpen", "compact", "compact_256_cm1_n0.0625_s64.safetensors")
# Any download attempt goes to a closed local port and fails: these runs must not need the network.
OFFLINE = dict(os.environ, http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", no_proxy="", NO_PROXY="")


def run_cli(*args: str, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "cli.py"), *args], capture_output=True, text=True,
                          cwd=str(cwd), timeout=600, env=OFFLINE)


def common(tmp_path) -> list[str]:
    """The compact model, and an empty detector folder: OpenCV YuNet (the default) comes from the pack's own copy."""
    return ["--model", str(data_file(*MODEL_256)), "--output", str(tmp_path / "out"), "--detector-dir",
            str(tmp_path / "no-detectors"), "--no-download"]


def test_restores_a_face_offline_with_only_the_bundled_detector(tmp_path):
    """A fresh machine: no network, no detector file anywhere, the model given by its bare file name."""
    shutil.copy(data_file(*MODEL_256), tmp_path / "GPEN-test.safetensors")
    photo = data_file("faces", "grace_hopper.jpg")
    out = run_cli(str(photo), "--model", "GPEN-test.safetensors", "--output", "out", "--detector-dir",
                  str(tmp_path / "detectors"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("1 image(s), 1 face(s) found, 1 restored, ")
    assert not (tmp_path / "detectors").exists()  # nothing downloaded, nothing written there
    restored = cv2.imread(str(tmp_path / "out" / "grace_hopper.jpg")).astype(float)
    original = cv2.imread(str(photo)).astype(float)
    assert restored.shape == original.shape == (600, 512, 3)
    face = np.abs(restored[150:330, 170:330] - original[150:330, 170:330]).mean()
    corner = np.abs(restored[:100, :100] - original[:100, :100]).mean()
    assert face > 8 and corner < 3  # the face was replaced (by noise: random weights), the rest kept


def test_model_name_lookup(tmp_path, monkeypatch):
    import cli

    monkeypatch.setattr(cli, "MODELS_DIR", tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "gpen").mkdir(parents=True)
    (tmp_path / "models" / "gpen" / "GPEN-BFR-512.pth").write_bytes(b"x")
    assert cli.resolve_model_path("GPEN-BFR-512.pth") == tmp_path / "models" / "gpen" / "GPEN-BFR-512.pth"
    (tmp_path / "GPEN-BFR-512.pth").write_bytes(b"y")  # a file of that name in the current folder wins, as typed
    assert cli.resolve_model_path("GPEN-BFR-512.pth") == Path("GPEN-BFR-512.pth")
    assert cli.resolve_model_path("sub/GPEN-BFR-512.pth") == Path("sub/GPEN-BFR-512.pth")  # a path: as typed
    with pytest.raises(cli.CheckpointReadError, match=r"checkpoint not found: GPEN-BFR-1024\.pth is neither in the "
                                                       r"current folder nor in .*models/gpen; put the file there"):
        cli.resolve_model_path("GPEN-BFR-1024.pth")


def test_restores_a_folder_at_2x(tmp_path):
    inputs = tmp_path / "in"
    (inputs / "more").mkdir(parents=True)
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        shutil.copy(data_file("faces", name), inputs / name)
    cv2.imwrite(str(inputs / "more" / "wall.png"), np.full((40, 50), 90, np.uint8))  # a subfolder, no face
    out = run_cli(str(inputs), *common(tmp_path), "--scale", "2", "--save-crops")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("3 image(s), 2 face(s) found, 2 restored, ") and out.stdout.count("\n") == 1
    assert "no face in wall.png: saved unchanged" in out.stderr and "[ WARN" not in out.stderr
    restored = cv2.imread(str(tmp_path / "out" / "astronaut.jpg"))
    assert restored.shape == (1024, 1024, 3)
    assert cv2.imread(str(tmp_path / "out" / "grace_hopper.jpg")).shape == (1200, 1024, 3)
    wall = cv2.imread(str(tmp_path / "out" / "more" / "wall.png"))
    assert wall.shape == (80, 100, 3) and (wall == 90).all()
    assert (tmp_path / "out" / "crops" / "grace_hopper_face0_restored.png").is_file()
    assert cv2.imread(str(tmp_path / "out" / "crops" / "astronaut_face0_aligned.png")).shape == (256, 256, 3)
    original = cv2.resize(cv2.imread(str(inputs / "astronaut.jpg")), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    face = np.abs(restored[300:480, 380:520].astype(float) - original[300:480, 380:520]).mean()
    corner = np.abs(restored[:150, 800:].astype(float) - original[:150, 800:]).mean()
    assert face > 8 and corner < 3  # the face is the (noise) restoration, the rest the upscaled photo


def test_video_frames_keep_names_and_order(tmp_path):
    photo = cv2.imread(str(data_file("faces", "grace_hopper.jpg")))
    inputs = tmp_path / "frames"
    inputs.mkdir()
    for i in range(3):
        cv2.imwrite(str(inputs / f"frame_{i:03d}.png"), np.roll(photo, 4 * i, axis=1))
    out = run_cli(str(inputs), *common(tmp_path), "--video-frames", "--strength", "0.5", "--dtype", "fp32")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("3 image(s), 3 face(s) found, 3 restored")
    for i in range(3):
        frame = cv2.imread(str(tmp_path / "out" / f"frame_{i:03d}.png"))
        assert frame.shape == photo.shape and not np.array_equal(frame, np.roll(photo, 4 * i, axis=1))


def test_missing_model_is_one_line(tmp_path):
    out = run_cli(str(data_file("faces", "astronaut.jpg")), "--model", str(tmp_path / "GPEN-BFR-512.pth"),
                  "--output", str(tmp_path / "out"))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("error: checkpoint not found")
    assert "Traceback" not in out.stderr and not (tmp_path / "out").exists()


@pytest.fixture()
def main():
    import cli

    return cli.main


def test_missing_detector_weights_offline(tmp_path, main, capsys):
    status = main([str(data_file("faces", "astronaut.jpg")), "--model", str(data_file(*MODEL_256)),
                   "--output", str(tmp_path / "o"), "--detector", "retinaface_resnet50", "--detector-dir",
                   str(tmp_path), "--no-download"])
    err = capsys.readouterr().err.strip()
    assert status == 1 and err.count("\n") == 0 and err.startswith("error: ")
    assert "detection_Resnet50_Final.pth" in err and str(tmp_path) in err and "https://" in err


def test_bad_input_is_status_2(tmp_path, main, capsys):
    model = str(data_file(*MODEL_256))
    assert main([str(tmp_path / "nothing.png"), "--model", model, "--output", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"error: input not found: {tmp_path / 'nothing.png'}"
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--model", model, "--output", str(tmp_path / "o")]) == 2
    assert "error: no images (.png .jpg .jpeg .webp .bmp .tif .tiff) in" in capsys.readouterr().err
    (tmp_path / "in").mkdir()
    photo = str(shutil.copy(data_file("faces", "astronaut.jpg"), tmp_path / "in"))
    assert main([photo, "--model", model, "--output", str(tmp_path / "o"), "--strength", "1.5"]) == 2
    assert capsys.readouterr().err.strip() == "error: strength must be between 0 and 1, got 1.5"
    assert main([photo, "--model", model, "--output", str(tmp_path / "in")]) == 2
    assert "--output would overwrite the input" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["--model", "x.pth"])
    assert usage.value.code == 2 and "usage:" in capsys.readouterr().err


def test_an_unreadable_image_is_skipped_and_reported(tmp_path, main, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "broken.jpg").write_bytes(b"not an image")
    cv2.imwrite(str(inputs / "plain.png"), np.full((30, 30, 3), 200, np.uint8))
    status = main([str(inputs), *common(tmp_path)])
    captured = capsys.readouterr()
    assert status == 2 and captured.out.startswith("1 image(s), 0 face(s) found, 0 restored")
    assert "1 image(s) could not be read: " in captured.err and "broken.jpg" in captured.err
    assert (tmp_path / "out" / "plain.png").is_file() and not (tmp_path / "out" / "broken.jpg").exists()
