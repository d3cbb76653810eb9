"""Shared fixtures: where the test data lives, and which tests may skip.

Small data lives in the repository, under ``tests/data`` (``data_file``; see ``tests/data/MANIFEST.md``), so a fresh
clone runs its own suite. Only a few big files come from ``../shared`` beside the repository root (``require_shared``;
the list is ``BIG_DATA``). Outside CI a missing ``../shared`` skips those tests with a reason; under ``CI=true`` it
fails them, because CI always has the folder and a silent skip there would hide a broken setup.

Every allowed skip reason starts with one of ``SKIP_TAGS``: ``[cuda]`` (needs a GPU or a CUDA build's Triton),
``[comfyui]`` (needs a real ComfyUI, ``COMFYUI_DIR``) and ``[big data]`` (needs a ``BIG_DATA`` file). With
``GPEN_ONLY_TAGGED_SKIPS=1`` (``.ci/run`` sets it for its run on a fresh clone) any other skip fails the session.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

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
