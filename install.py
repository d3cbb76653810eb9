"""Run by ComfyUI-Manager (and comfy-cli) after ``requirements.txt``; by hand: ``python install.py`` with ComfyUI's
Python. Installs ``opencv-python-headless`` only where no OpenCV distribution is installed.

OpenCV is not in requirements.txt on purpose: ComfyUI installs often already have one of ``opencv-python``,
``opencv-python-headless`` or a ``-contrib`` one (other packs bring them), and pip would install the listed one beside
it. All of them write the same ``cv2`` folder, so two work until either is uninstalled or upgraded, and then ``cv2``
is broken for every pack. Any one of them serves this pack. ComfyUI never imports this file.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import subprocess
import sys

logger = logging.getLogger("comfyui-gpen.install")

#: The distributions that provide ``cv2`` (PyPI names).
OPENCV_DISTRIBUTIONS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python",
                        "opencv-contrib-python-headless")
#: What is installed where none is: no GUI libraries needed (servers, containers), and the choice of most packs.
OPENCV_REQUIREMENT = "opencv-python-headless>=4.8"


def installed_opencv() -> list[str]:
    """The OpenCV distributions installed in this Python."""
    found = []
    for name in OPENCV_DISTRIBUTIONS:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def opencv_install_command(installed: list[str], cv2_importable: bool) -> list[str] | None:
    """The pip command to run, or None when an OpenCV is there already (a distribution, or a ``cv2`` from elsewhere,
    e.g. conda or a system package)."""
    if installed or cv2_importable:
        return None
    return [sys.executable, "-m", "pip", "install", OPENCV_REQUIREMENT]


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="comfyui-gpen install.py: %(message)s")
    installed = installed_opencv()
    command = opencv_install_command(installed, importlib.util.find_spec("cv2") is not None)
    if command is None:
        logger.info("OpenCV is there (%s); nothing to install", ", ".join(installed) or "cv2 importable")
        return 0
    logger.info("no OpenCV installed: %s", " ".join(command[2:]))
    if "--dry-run" in argv:
        return 0
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
