"""Shared fixtures: where ../shared lives, and how a test that needs it behaves without it.

Tests read weights, photos and reference vectors from ``../shared`` (beside the repository root).
Outside CI a missing folder skips those tests with a reason; under ``CI=true`` it fails them, because
CI always has the folder and a silent skip there would hide a broken setup.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"

# Tests import ``gpen_arch``, ``face_pipeline`` and ``cli`` from the repository root, as cli.py does.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_shared(*parts: str) -> Path:
    """Return ``../shared/<parts>``; skip (or fail under CI=true) when it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"{path} is missing: tests that need ../shared run only beside it"
        if _in_ci():
            pytest.fail(message + " (CI=true, so this is a failure, not a skip)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return require_shared()


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
