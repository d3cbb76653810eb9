"""Libraries that only some options need (facexlib, OpenCV, kornia, pyarrow), imported when asked for, with errors
that say what to do.

This pack uses only facexlib's RetinaFace (``facexlib.detection``) and parsing networks (``facexlib.parsing``).
Importing them needs torch, torchvision, OpenCV, numpy and Pillow; facexlib's declared dependencies also bring numba and
filterpy (for its tracking code, which is imported only by ``facexlib.tracking.sort``), and filterpy installs only from
source, which fails in many ComfyUI installs, and ``opencv-python`` beside an existing ``opencv-python-headless``. So
facexlib is optional (``pip install --no-deps facexlib``), nothing imports it at import time, and everything else in the
pack works without it; an option that needs it says why it cannot be imported, how to install it and what to choose
instead.

OpenCV is not in requirements.txt either, so that pip never installs a second OpenCV distribution beside the one a
ComfyUI install already has (``opencv-python``, ``-headless``, ``-contrib``...: they share the ``cv2`` folder, and
removing one breaks the other); ``install.py`` adds ``opencv-python-headless`` only where none is installed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from types import ModuleType

from .errors import MissingDependencyError

#: The install line the errors give: no dependencies, so no numba, no filterpy and no second OpenCV distribution.
INSTALL_HINT = "python -m pip install --no-deps facexlib"
OPENCV_HINT = "python -m pip install opencv-python-headless"


def import_facexlib(module: str, *, needed_for: str, instead: str) -> ModuleType:
    """The facexlib submodule ``module`` (e.g. ``"facexlib.detection.retinaface"``).

    ``needed_for``: what the user chose that needs it (``"the retinaface_resnet50 detector"``); ``instead``: what to
    choose that does not need it. Raises ``MissingDependencyError`` saying both, the import error and the install line.
    """
    try:
        return importlib.import_module(module)
    except Exception as exc:  # a broken install can fail with more than ImportError; reraised as one
        raise MissingDependencyError(
            f"{needed_for} needs facexlib, which cannot be imported here ({type(exc).__name__}: {exc}). Install it "
            f"into the Python that runs this pack with `{INSTALL_HINT}` (only its RetinaFace and parsing networks are "
            f"used, which need torch, torchvision, OpenCV, numpy and Pillow; a plain `pip install facexlib` also "
            f"builds filterpy from source and adds opencv-python beside the OpenCV you have), or choose {instead}"
        ) from exc


def import_cv2(*, needed_for: str, instead: str) -> ModuleType:
    """OpenCV's ``cv2``; ``MissingDependencyError`` saying what needs it and how to install it when it cannot be
    imported."""
    try:
        return importlib.import_module("cv2")
    except Exception as exc:  # a broken install (two OpenCVs, one removed) fails with more than ImportError
        raise MissingDependencyError(
            f"{needed_for} needs OpenCV, which cannot be imported here ({type(exc).__name__}: {exc}). Install one "
            f"OpenCV distribution into the Python that runs this pack: `{OPENCV_HINT}` (or run this pack's install.py, "
            f"which does that only where none is installed); if one is installed but broken, uninstall every "
            f"opencv-* distribution and install one again. Or choose {instead}"
        ) from exc


def import_kornia_yunet(module: str) -> ModuleType:
    """kornia's YuNet ``module`` (``kornia.models.yunet.model`` or ``.processors``, new in kornia 0.9, which needs
    Python 3.11); ``MissingDependencyError`` saying what is installed and what to do when it cannot be imported."""
    try:
        return importlib.import_module(module)
    except Exception as exc:  # an old kornia raises ModuleNotFoundError for kornia.models.yunet; a broken one others
        try:
            found = f"kornia {importlib.metadata.version('kornia')} is installed"
        except importlib.metadata.PackageNotFoundError:
            found = "kornia is not installed"
        raise MissingDependencyError(
            f"the yunet detector needs kornia 0.9 or newer (its kornia.models.yunet), and {found} "
            f"({type(exc).__name__}: {exc}). Install it with `python -m pip install \"kornia>=0.9\"` (Python 3.11 or "
            f"newer), or choose the yunet_opencv detector (the default, shipped with the pack) or a retinaface one"
        ) from exc


#: pyarrow, which reads object stores (``s3://``, ``gs://``...): it comes with Ray Data, or alone
PYARROW_HINT = 'python -m pip install pyarrow (or python -m pip install "ray[data]", which brings it)'


def import_pyarrow_fs(*, needed_for: str) -> ModuleType:
    """``pyarrow.fs``; ``MissingDependencyError`` saying what needs it (``needed_for``: "reading s3://bucket/...",
    the URI shown without its secrets) and how to install it when it cannot be imported."""
    try:
        return importlib.import_module("pyarrow.fs")
    except Exception as exc:  # a broken install (a pyarrow built for another numpy) fails with more than ImportError
        raise MissingDependencyError(
            f"{needed_for} needs pyarrow (its pyarrow.fs reads object stores), which cannot be imported here "
            f"({type(exc).__name__}: {exc}). Install it into the Python that runs this pack: `{PYARROW_HINT}`; or "
            f"copy the images to a local or mounted folder and give that folder"
        ) from exc
