"""cli.py run as a user runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys

import cv2
from conftest import REPO_ROOT, require_shared


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "cli.py"), *args], capture_output=True, text=True,
                          cwd=str(REPO_ROOT), timeout=600)


def test_restores_a_folder_at_2x(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("astronaut.png", "grace_hopper.jpg"):
        shutil.copy(require_shared("faces", name), inputs / name)
    out = run_cli(str(inputs), "--model", str(require_shared("gpen", "vectors", "gpen_256_cm1_n0.25.pth")),
                  "--output", str(tmp_path / "out"), "--detector", "yunet_opencv", "--detector-dir",
                  str(require_shared("detectors")), "--no-download", "--scale", "2", "--save-crops")
    assert out.returncode == 0, out.stderr
    assert "2 image(s), 2 face(s) found, 2 restored" in out.stdout
    assert cv2.imread(str(tmp_path / "out" / "astronaut.png")).shape == (1024, 1024, 3)
    assert cv2.imread(str(tmp_path / "out" / "grace_hopper.jpg")).shape == (1200, 1024, 3)
    assert (tmp_path / "out" / "crops" / "grace_hopper_face0_restored.png").is_file()


def test_missing_model_is_one_line(tmp_path):
    out = run_cli(str(require_shared("faces", "astronaut.png")), "--model", str(tmp_path / "GPEN-BFR-512.pth"),
                  "--output", str(tmp_path / "out"))
    assert out.returncode == 1
    assert out.stderr.strip().startswith("error: checkpoint not found") and "Traceback" not in out.stderr


def test_missing_detector_weights_offline(tmp_path):
    out = run_cli(str(require_shared("faces", "astronaut.png")), "--model",
                  str(require_shared("gpen", "vectors", "gpen_256_cm1_n0.25.pth")), "--output", str(tmp_path / "o"),
                  "--detector-dir", str(tmp_path), "--no-download")
    assert out.returncode == 1 and "detection_Resnet50_Final.pth" in out.stderr and "Traceback" not in out.stderr


def test_usage_error():
    out = run_cli("--model", "x.pth")
    assert out.returncode == 2 and "usage:" in out.stderr
