"""The pack where facexlib, or what facexlib's package imports (numba, filterpy), cannot be imported, as in many ComfyUI
installs: the pack still imports and restores with the default detector; RetinaFace and the parsing masks say why
they cannot run and how to fix it, at use rather than at import; with facexlib installed without numba and filterpy
(``pip install --no-deps facexlib``, the install line those errors give), RetinaFace runs.

Each case runs in a subprocess whose ``sitecustomize`` (put first on PYTHONPATH) installs a meta-path finder that
makes the modules named in ``GPEN_TEST_BLOCK`` raise ``ModuleNotFoundError``, exactly as when they are not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from conftest import REPO_ROOT, data_file

BLOCKER = '''
import importlib.abc, os, sys

BLOCKED = tuple(os.environ.get("GPEN_TEST_BLOCK", "").split(","))


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, Blocker())
'''


def run_blocked(tmp_path, blocked: str, body: str) -> dict:
    """Run ``body`` (which sets ``result``, a JSON-able dict) with ``blocked`` (comma-separated top-level modules)
    unimportable and the pack imported inside the ComfyUI test double; returns ``result``."""
    (tmp_path / "site").mkdir(exist_ok=True)
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    (tmp_path / "models").mkdir(exist_ok=True)
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(REPO_ROOT / 'tests' / 'comfy_double')!r})
        sys.path.insert(0, {str(REPO_ROOT / 'tests')!r})
        sys.path.insert(0, {str(REPO_ROOT)!r})
        import folder_paths
        folder_paths.models_dir = {str(tmp_path / 'models')!r}
        from conftest import import_pack
        pack = import_pack("comfyui-gpen-without-facexlib")
        result = {{"nodes": sorted(pack.NODE_CLASS_MAPPINGS)}}
    """) + textwrap.dedent(body) + "\nprint(json.dumps(result))\n"
    env = dict(os.environ, GPEN_TEST_BLOCK=blocked,
               PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


RESTORE = f"""
import torch
from face_pipeline.detection import DEFAULT_DETECTOR, load_detector
from face_pipeline.image import load_image
from face_pipeline.pipeline import PipelineOptions, run_pipeline
from gpen_arch import load_gpen_file

model = load_gpen_file({str(data_file("gpen", "compact", "compact_256_cm1_n0.0625_s64.safetensors"))!r})
detector = load_detector(DEFAULT_DETECTOR, weights_dir={str(data_file("detectors"))!r})
image = load_image({str(data_file("faces", "grace_hopper.jpg"))!r})
with torch.inference_mode():
    pasted, report = run_pipeline(image, model=model, detector=detector, options=PipelineOptions.of(scale=1))
result["detector"] = DEFAULT_DETECTOR
result["faces"] = report.faces_restored
result["changed"] = float((pasted.images - image).abs().max())
result["shape"] = list(pasted.images.shape)
"""


def test_the_pack_imports_and_restores_when_facexlib_cannot_be_imported(tmp_path):
    result = run_blocked(tmp_path, "facexlib,numba,filterpy", RESTORE + f"""
from face_pipeline.errors import MissingDependencyError
from face_pipeline.paste.parsing import load_parsing_net

errors = {{}}
try:
    load_detector("retinaface_mobile0.25", weights_dir={str(data_file("detectors"))!r})
except MissingDependencyError as exc:
    errors["retinaface"] = str(exc)
parsing_dir = {str(tmp_path / "parsing")!r}
import pathlib
pathlib.Path(parsing_dir).mkdir()
(pathlib.Path(parsing_dir) / "parsing_parsenet.pth").write_bytes(b"not read: facexlib is missing first")
try:
    load_parsing_net(parsing_dir)
except MissingDependencyError as exc:
    errors["parsing"] = str(exc)
result["errors"] = errors
result["facexlib_modules"] = sorted(m for m in sys.modules if m.startswith(("facexlib", "numba", "filterpy")))
""")
    assert "GPENFaceRestore" in result["nodes"] and len(result["nodes"]) == 8
    assert result["detector"] == "yunet_opencv"
    assert result["faces"] == 1 and result["shape"][0] == 1
    assert result["changed"] > 0.05  # the face was restored and pasted back
    retinaface, parsing = result["errors"]["retinaface"], result["errors"]["parsing"]
    assert retinaface.startswith("the retinaface_mobile0.25 detector needs facexlib, which cannot be imported here "
                                 "(ModuleNotFoundError: No module named 'facexlib'")
    assert "pip install --no-deps facexlib" in retinaface and "choose the yunet_opencv detector" in retinaface
    assert parsing.startswith("the parsing mask (parsenet network) needs facexlib")
    assert "pip install --no-deps facexlib" in parsing and "choose the rounded_rect or ellipse mask" in parsing
    assert result["facexlib_modules"] == []


def test_retinaface_runs_with_facexlib_installed_without_numba_and_filterpy(tmp_path):
    """``pip install --no-deps facexlib`` is enough: only facexlib's tracking code (never used here) needs numba and
    filterpy, and importing facexlib does not import it."""
    result = run_blocked(tmp_path, "numba,filterpy", f"""
import torch
from face_pipeline.detection import load_detector
from face_pipeline.image import load_image

detector = load_detector("retinaface_mobile0.25", weights_dir={str(data_file("detectors"))!r})
with torch.inference_mode():
    (faces,) = detector.detect(load_image({str(data_file("faces", "grace_hopper.jpg"))!r}))
result["faces"] = len(faces)
try:
    import facexlib.tracking.sort  # noqa: F401
    result["tracking"] = "imported"
except ImportError as exc:
    result["tracking"] = str(exc)
""")
    assert result["faces"] == 1
    assert "blocked by the test" in result["tracking"]  # numba and filterpy were really unimportable


def test_kornia_and_opencv_missing_are_explained_at_use(tmp_path):
    """The yunet detector without kornia 0.9 (Python 3.10 gets none), yunet_opencv without OpenCV (install.py not
    run): the pack still imports, and the detector that needs the library says what to do, before any download."""
    result = run_blocked(tmp_path, "kornia,cv2", f"""
from face_pipeline.detection import load_detector
from face_pipeline.errors import MissingDependencyError

errors = {{}}
for name in ("yunet", "yunet_opencv"):
    try:
        load_detector(name, weights_dir={str(tmp_path / "empty")!r}, allow_download=True)
    except MissingDependencyError as exc:
        errors[name] = str(exc)
result["errors"] = errors
""")
    assert len(result["nodes"]) == 8
    yunet, opencv = result["errors"]["yunet"], result["errors"]["yunet_opencv"]
    assert yunet.startswith("the yunet detector needs kornia 0.9 or newer (its kornia.models.yunet)")
    assert 'pip install "kornia>=0.9"' in yunet and "choose the yunet_opencv detector" in yunet
    assert opencv.startswith("the yunet_opencv detector needs OpenCV, which cannot be imported here")
    assert "pip install opencv-python-headless" in opencv and "install.py" in opencv
    assert not (tmp_path / "empty").exists()  # nothing was downloaded
