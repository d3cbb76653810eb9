"""facexlib, imported only when RetinaFace or a parsing mask is asked for, with an error that says what to do.

This pack uses only facexlib's RetinaFace (``facexlib.detection``) and parsing networks (``facexlib.parsing``). Importing
them needs torch, torchvision, OpenCV, numpy and Pillow; facexlib's declared dependencies also bring numba and filterpy
(for its tracking code, which is imported only by ``facexlib.tracking.sort``), and filterpy installs only from source,
which fails in many ComfyUI installs, and ``opencv-python`` beside an existing ``opencv-python-headless``. So facexlib
is optional (``pip install --no-deps facexlib``), nothing imports it at import time, and everything else in the pack
works without it; an option that needs it says why it cannot be imported, how to install it and what to choose instead.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

#: The install line the errors give: no dependencies, so no numba, no filterpy and no second OpenCV distribution.
INSTALL_HINT = "python -m pip install --no-deps facexlib"


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
            f"used, which need torch, torchvision, OpenCV, numpy and Pillow; a plain `pip install facexlib` also builds "
            f"filterpy from source and adds opencv-python beside the OpenCV you have), or choose {instead}"
        ) from exc
