"""The Registry package: pyproject.toml agrees with requirements.txt, the licence file is there, nothing heavy at
import."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import tomllib
from conftest import REPO_ROOT
from PIL import Image


def requirement_lines() -> list[str]:
    lines = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_pyproject_matches_requirements_and_registry_fields():
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    project, comfy = data["project"], data["tool"]["comfy"]
    assert project["name"] == "comfyui-gpen" and project["version"] == "0.1.0"
    assert project["dependencies"] == requirement_lines()
    assert not any(dep.split(">")[0].split("=")[0].strip() in {"torch", "torchvision"} for dep in requirement_lines())
    assert project["license"] == {"file": "LICENSE"}
    assert "GNU GENERAL PUBLIC LICENSE" in (REPO_ROOT / "LICENSE").read_text()[:200]
    assert "Version 3" in (REPO_ROOT / "LICENSE").read_text()[:200]
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["Icon"].startswith("https://")
    assert {"Repository", "Issues"} <= set(project["urls"])


def test_registry_metadata_is_complete_and_within_limits():
    """[tool.comfy] requires-comfyui in the form comfy-cli accepts, classifiers from the Registry's lists, an icon in
    the repository within the Registry's limits (SVG/PNG/JPG/GIF, square, at most 400 x 400 px)."""
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    project, comfy = data["project"], data["tool"]["comfy"]
    assert re.fullmatch(r">=\d+\.\d+\.\d+", comfy["requires-comfyui"])
    accelerators = {"GPU :: NVIDIA CUDA", "GPU :: AMD ROCm", "GPU :: Intel Arc", "NPU :: Huawei Ascend",
                    "GPU :: Apple Metal"}
    classifiers = project["classifiers"]
    assert "Operating System :: OS Independent" in classifiers
    assert "Environment :: GPU :: NVIDIA CUDA" in classifiers
    assert all(c.removeprefix("Environment :: ") in accelerators for c in classifiers if c.startswith("Environment"))
    prefix = "https://raw.githubusercontent.com/comfyui-gpen/comfyui-gpen/main/"
    assert comfy["Icon"].startswith(prefix)
    icon = REPO_ROOT / comfy["Icon"].removeprefix(prefix)
    with Image.open(icon) as image:
        assert image.format in {"PNG", "JPEG", "GIF"} and image.width == image.height <= 400
    assert icon.stat().st_size < 64 * 1024


def test_python_versions_and_kornia_agree():
    """kornia.models.yunet (the yunet detector) is new in kornia 0.9, which needs Python 3.11: requirements.txt asks for
    it only there, so that an install on the Python 3.10 that requires-python allows does not fail."""
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert data["project"]["requires-python"] == ">=3.10"
    (kornia,) = [line for line in requirement_lines() if line.startswith("kornia")]
    assert kornia == 'kornia>=0.9; python_version >= "3.11"'


def test_requirements_never_add_a_second_opencv_nor_facexlib():
    """OpenCV and facexlib stay out of requirements.txt (install.py adds OpenCV where none is installed; facexlib is
    installed by hand with --no-deps): pip would otherwise put opencv-python beside an opencv-python-headless."""
    names = {re.split(r"[<>=;\[ ]", line)[0].lower() for line in requirement_lines()}
    assert not {n for n in names if n.startswith("opencv")} and "facexlib" not in names
    install = import_install_script()
    assert install.opencv_install_command([], cv2_importable=False)[-1] == "opencv-python-headless>=4.8"
    for present in (["opencv-python"], ["opencv-python-headless"], ["opencv-contrib-python"]):
        assert install.opencv_install_command(present, cv2_importable=True) is None
    assert install.opencv_install_command([], cv2_importable=True) is None  # cv2 from conda or the system
    assert set(install.installed_opencv()) <= set(install.OPENCV_DISTRIBUTIONS)


def import_install_script():
    spec = importlib.util.spec_from_file_location("comfyui_gpen_install", REPO_ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_install_script_dry_run_in_this_python():
    out = subprocess.run([sys.executable, str(REPO_ROOT / "install.py"), "--dry-run"], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert "OpenCV is there (opencv-python" in out.stderr  # requirements-test.txt brings opencv-python


def test_importing_the_nodes_loads_no_model_and_downloads_nothing(tmp_path):
    """Import the pack inside a fake ComfyUI (the test double) with networking disabled: it must register its folders
    and nodes without touching torch.hub, the network, or any model file."""
    code = f"""
import socket, sys
def no_network(*args, **kwargs):
    raise AssertionError("network access at import")
socket.socket.connect = no_network
sys.path.insert(0, {str(REPO_ROOT / 'tests' / 'comfy_double')!r})
sys.path.insert(0, {str(REPO_ROOT / 'tests')!r})
import folder_paths
folder_paths.models_dir = {str(tmp_path)!r}
from conftest import import_pack
pack = import_pack("comfyui-gpen")
print(sorted(pack.NODE_CLASS_MAPPINGS))
print(sorted(m for m in sys.modules if m.startswith(("facexlib", "kornia"))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    nodes, heavy = out.stdout.strip().splitlines()
    assert "GPENFaceRestore" in nodes
    assert heavy == "[]"  # detector libraries are imported only when a detector is loaded
    assert list(tmp_path.iterdir()) == []  # no folders created, nothing downloaded
