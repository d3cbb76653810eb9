"""Reading the face pipeline's own weight files (detectors, face parsing) with gpen_arch's checkpoint reader.

That reader never runs code from a file (``torch.load(weights_only=True)``) and says why a bad file is bad: an HTML
page or other non-checkpoint bytes (a failed download), a truncated file, a pickle that wants to run code; none of
its messages suggests loading unsafely.
"""

from __future__ import annotations

import importlib
from pathlib import Path


def _gpen_arch(module: str):
    # gpen_arch is this package's sibling: "gpen_arch" when the repository root is on sys.path (cli.py, the tests),
    # "<pack>.gpen_arch" inside ComfyUI, which imports the repository as one package
    parent = __name__.rsplit(".", 2)[0] if __name__.count(".") >= 2 else ""  # the package above face_pipeline
    name = f"gpen_arch.{module}"
    return importlib.import_module(f"{parent}.{name}" if parent else name)


def _checkpoint_file(module: str = "checkpoint_file"):
    return _gpen_arch(f"formats.{module}")


def unwrap_tensors(state, *, wrappers, arrived):
    """The tensors of a loaded weight file, unwrapped as the GPEN reader unwraps its checkpoints
    (``gpen_arch.state_dict.unwrap_tensors``: the same rules for every network's file)."""
    return _gpen_arch("state_dict").unwrap_tensors(state, wrappers=wrappers, arrived=arrived)


def load_torch_weights(path: str | Path, *, download_hint: str, error: type[Exception]) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU; a file that cannot be read raises ``error`` with the
    reason and ``download_hint`` (e.g. "from https://... into models/facedetection")."""
    module = _checkpoint_file()
    try:
        return module.load_torch_file(path, download_hint=download_hint)
    except module.CheckpointReadError as exc:
        raise error(str(exc)) from exc


def describe_failed_download(path: str | Path, *, download_hint: str) -> str | None:
    """A message when ``path`` is an HTML page or a Git LFS pointer (what a failed download leaves), else None."""
    return _checkpoint_file("file_scan").describe_failed_download(Path(path), download_hint=download_hint)


def load_weight_file(path: str | Path, *, download_hint: str, error: type[Exception]) -> object:
    """A weight file as stored, ``.safetensors`` (its header held to the budgets first) or a torch file
    (``load_torch_weights``); a file that cannot be read raises ``error`` with the reason and ``download_hint``."""
    if Path(path).suffix.lower() != ".safetensors":
        return load_torch_weights(path, download_hint=download_hint, error=error)
    try:
        return _checkpoint_file("loading").read_state_dict(path)
    except _checkpoint_file().CheckpointReadError as exc:
        raise error(f"{exc} (download it again {download_hint})") from exc


def looks_like(names) -> str | None:
    """What another network with these state-dict keys looks like (``gpen_arch.state_dict.looks_like``: the one
    table of lookalikes), or None."""
    return _gpen_arch("state_dict").looks_like(names)
