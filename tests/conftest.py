"""Shared fixtures: where the test data lives, and which tests may skip.

Small data lives in the repository, under ``tests/data`` (``data_file``; see ``tests/data/MANIFEST.md``), so a fresh
clone runs its own suite. Only a few big files come from ``../shared`` beside the repository root (``require_shared``;
the list is ``BIG_DATA``). Outside CI a missing ``../shared`` skips those tests with a reason; under ``CI=true`` it
fails them, because CI always has the folder and a silent skip there would hide a broken setup.

Every allowed skip reason starts with one of ``SKIP_TAGS``: ``[cuda]`` (needs a GPU or a CUDA build's Triton),
``[comfyui]`` (needs a real ComfyUI, ``COMFYUI_DIR``) and ``[big data]`` (needs a ``BIG_DATA`` file). With
``GPEN_ONLY_TAGGED_SKIPS=1`` (``.ci/run`` sets it for its run on a fresh clone) any other skip fails the session.

The node tests' shared fixtures live here too (``pack``, ``gpen_model``, ``detector``, ``like_comfyui``), with their
inputs (``DETECT``, ``comfy_image``, ``node``): no test module imports another (tests/test_architecture.py checks).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = REPO_ROOT / "tests" / "data"
SHARED = REPO_ROOT.parent / "shared"

SKIP_CUDA = "[cuda] "
SKIP_COMFYUI = "[comfyui] "
SKIP_BIG_DATA = "[big data] "
SKIP_TAGS = (SKIP_CUDA, SKIP_COMFYUI, SKIP_BIG_DATA)

#: The only parts of ../shared the tests may read: too big for the repository (everything else is in tests/data).
BIG_DATA = (
    "gpen/vectors",  # full-width reference weights and outputs, 127 MB
    "gpen/alignment/astronaut_gpen_512.png",  # the official 512 crops, 0.8 MB
    "gpen/alignment/grace_hopper_gpen_512.png",
    "faces/astronaut.png",  # lossless original of tests/data/faces/astronaut.jpg, 0.8 MB
    "faces/solvay_conference_1927.png",  # 29 small faces, 0.9 MB
    "faces/pexels_woman_large_face.jpeg",  # one very large face; its licence keeps it out of the repository
    "gpen/onnx",  # the ONNX exports that tests/data/onnx does not repeat (1.3-1.9 MB each)
    "gpen/pipeline",  # the official pipeline's vectors that tests/data/gpen/pipeline does not repeat, 8 MB
)

# Tests import ``gpen_arch``, ``face_pipeline`` and ``cli`` from the repository root, as cli.py does.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def data_file(*parts: str) -> Path:
    """``tests/data/<parts>``: part of the repository, so a missing file is a failure, never a skip."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"{path} is missing: it belongs to the repository (tests/data/MANIFEST.md lists every file)")
    return path


def require_shared(*parts: str) -> Path:
    """``../shared/<parts>`` for one of the ``BIG_DATA`` files; skip (or fail under CI=true) when it is missing."""
    relative = "/".join(parts)
    if not any(relative == big or relative.startswith(big + "/") for big in BIG_DATA):
        call = f"data_file({', '.join(map(repr, parts))})"
        where = (f"it is in the repository: use {call}" if DATA.joinpath(*parts).exists() else
                 "small test data belongs in tests/data, with a line in tests/data/MANIFEST.md")
        raise ValueError(f"../shared/{relative} is not listed in BIG_DATA (tests/conftest.py); {where}")
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"{SKIP_BIG_DATA}{path} is missing: tests that need ../shared run only beside it"
        if _in_ci():
            pytest.fail(message + " (CI=true, so this is a failure, not a skip)")
        pytest.skip(message)
    return path


def import_pack(name: str = "comfyui-gpen"):
    """Import the repository as a package under an arbitrary folder name, the way ComfyUI does.

    ComfyUI loads ``custom_nodes/<folder>/__init__.py`` with ``spec_from_file_location`` under the folder's
    name, so relative imports must work under any name, hyphens included.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------------- the nodes
# The pack as ComfyUI loads it, with the ComfyUI test double (tests/comfy_double): fixtures and inputs that
# test_nodes*.py share (module-scoped fixtures: each test module gets its own pack).
DOUBLE = REPO_ROOT / "tests" / "comfy_double"  # the ComfyUI test double
PACK_UNDER_TEST = "comfyui-gpen-under-test"  # the folder name the node tests import the pack under


@pytest.fixture(scope="module")
def pack(tmp_path_factory):  # -> (the pack's module, the models folder)
    """The pack imported the way ComfyUI imports it, over a temporary models folder holding a compact vector's weights
    (as a GPEN .pth model) and the small detector weights of tests/data; OpenCV YuNet is not there, so the node uses
    the copy shipped with the pack."""
    models = tmp_path_factory.mktemp("models")
    (models / "gpen").mkdir()
    compact = load_file(str(data_file("gpen", "compact", "compact_256_cm1_n0.0625_s64.safetensors")))
    torch.save(compact, models / "gpen" / "GPEN-test-256.pth")
    (models / "facedetection").mkdir()
    for name in ("detection_mobilenet0.25_Final.pth", "yunet_final.pth"):
        shutil.copy(data_file("detectors", name), models / "facedetection" / name)
    (models / "facerestore_models").mkdir()
    (models / "facerestore_models" / "notes.txt").write_text("not a model")
    sys.path.insert(0, str(DOUBLE))
    # a fresh ComfyUI double and a fresh pack registered with it: each test module gets its own, whichever ran before
    fresh = ("folder_paths", "server", "comfy", "comfy_execution", PACK_UNDER_TEST)
    for name in [n for n in sys.modules if n in fresh or n.split(".")[0] in fresh]:
        del sys.modules[name]
    import folder_paths

    folder_paths.models_dir = str(models)
    module = import_pack(PACK_UNDER_TEST)
    yield module, models
    sys.path.remove(str(DOUBLE))


#: Detect Faces' inputs at their defaults (every face, GPEN template, 256 crops, no video smoothing)
DETECT = {"select": "all", "indices": "0", "sort_by": "area", "min_face_size": 0, "max_faces": 0, "template": "gpen",
          "crop_size": "256", "video_smoothing": 0.0}


def comfy_image(name: str, size: tuple[int, int] | None = None) -> torch.Tensor:
    from face_pipeline.image import load_image

    image = load_image(data_file("faces", name))
    if size is not None:
        image = torch.nn.functional.interpolate(image, size=size, mode="bilinear", align_corners=False)
    return image.permute(0, 2, 3, 1).contiguous()  # [1, H, W, 3]


def node(pack, name):
    return pack[0].NODE_CLASS_MAPPINGS[name]()


@pytest.fixture
def like_comfyui():
    """ComfyUI runs every node under torch.inference_mode() (execution.py): so do these tests (the node tests use
    it for every test: ``pytestmark = pytest.mark.usefixtures("like_comfyui")``)."""
    with torch.inference_mode():
        yield


@pytest.fixture(scope="module")
def gpen_model(pack):
    with torch.inference_mode():  # as ComfyUI loads it: the parameters are inference tensors
        return node(pack, "GPENLoadModel").load(model_name="GPEN-test-256.pth", precision="auto")[0]


@pytest.fixture(scope="module")
def detector(pack):
    return node(pack, "GPENLoadFaceDetector").load(detector="yunet_opencv", allow_download=False,
                                                   score_threshold=0.0)[0]


# ------------------------------------------------------------------------------------------------- skip accounting
_SKIPS: list[tuple[str, str]] = []  # (test id, reason)


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPS.append((report.nodeid, _skip_reason(report)))


def _untagged() -> list[tuple[str, str]]:
    return [(test, reason) for test, reason in _SKIPS if not reason.startswith(SKIP_TAGS)]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _SKIPS:
        return
    counts = Counter(next((tag.strip() for tag in SKIP_TAGS if reason.startswith(tag)), "untagged")
                     for _, reason in _SKIPS)
    terminalreporter.write_line("skipped by reason: " + ", ".join(f"{n} {tag}" for tag, n in sorted(counts.items())))
    if os.environ.get("GPEN_ONLY_TAGGED_SKIPS") == "1":
        for test, reason in _untagged():
            terminalreporter.write_line(f"NOT ALLOWED to skip (GPEN_ONLY_TAGGED_SKIPS=1): {test}: {reason}", red=True)


def pytest_sessionfinish(session, exitstatus) -> None:
    if os.environ.get("GPEN_ONLY_TAGGED_SKIPS") == "1" and _untagged() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
