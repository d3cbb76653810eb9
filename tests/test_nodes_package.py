"""The Registry package: pyproject.toml agrees with requirements.txt, the licence file is there, nothing heavy at
import."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from conftest import REPO_ROOT


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
