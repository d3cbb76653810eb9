"""Where each input's results go, decided once before any work, with every clash refused up front.

An output is a folder (the inputs keep their names and subfolders under it) or, for exactly one input, an image file
name (``--output restored.jpg``). The plan refuses (``FileLayoutError``) an output folder that is, or is inside, a
folder whose images are read, and any output path that is an input; it marks inputs that cannot be written (a suffix
no encoder writes) or whose output already exists (unless ``overwrite``) as skipped, with the reason. Crops of
``a.jpg`` and ``a.png`` get distinct names (the crop name keeps the input's full name). Inputs may be objects in an
object store (``stores``); the output may not (``stores.refuse_store_output`` says why).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from face_pipeline.errors import FileLayoutError
from face_pipeline.image import IMAGE_SUFFIXES

from .inputs import InputFile, JobInputs
from .stores import Source, refuse_store_output

#: image formats people name that no encoder here writes: an output file name with one of these is refused
UNWRITABLE_IMAGE_SUFFIXES = (".gif", ".heic", ".heif", ".avif", ".jxl", ".jp2", ".ico", ".svg", ".ppm", ".pgm")
CROPS_FOLDER = "crops"


@dataclass(frozen=True)
class PlannedOutput:
    """One input and its output file; ``skip`` says why it is not processed (None: it is)."""

    source: Source  # a local file, or an object (stores.StoreObject)
    relative: Path  # the input's name under the output folder (crops are named after it)
    target: Path
    skip: str | None = None
    exists: bool = False  # skipped because the output is already there (not a bad input)


@dataclass(frozen=True)
class OutputPlan:
    """Every input's output, the folder they are written into, and whether existing files may be replaced."""

    root: Path  # the output folder (for a single output file, its folder)
    items: tuple[PlannedOutput, ...]
    overwrite: bool = False

    @property
    def todo(self) -> tuple[PlannedOutput, ...]:
        return tuple(item for item in self.items if item.skip is None)

    def crop_path(self, item: PlannedOutput, face_index: int, kind: str) -> Path:
        """``root/crops/<input name with suffix>_face<k>_<kind>.png`` (subfolders kept)."""
        return self.root / CROPS_FOLDER / item.relative.parent / f"{item.relative.name}_face{face_index}_{kind}.png"

    def skipping(self, item: PlannedOutput, reason: str, *, exists: bool = False) -> OutputPlan:
        """This plan with ``item`` marked as skipped for ``reason``."""
        items = tuple(replace(i, skip=reason, exists=exists) if i == item else i for i in self.items)
        return replace(self, items=items)


def names_a_file(output: Path) -> bool:
    """Whether ``output`` names an image file rather than a folder (an image suffix, and not an existing folder)."""
    suffix = output.suffix.lower()
    return not output.is_dir() and suffix in IMAGE_SUFFIXES + UNWRITABLE_IMAGE_SUFFIXES


def _key(path: Path) -> str:
    return os.path.normcase(str(path.resolve()))


def _is_within(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _same_file(a: Path, b: Path) -> bool:
    if _key(a) == _key(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links, case-insensitive file systems
    except OSError:
        return False


def plan_outputs(inputs: JobInputs, output: str | Path, *, overwrite: bool = False,
                 also_read: Iterable[str | Path] = ()) -> OutputPlan:
    """The ``OutputPlan`` of ``inputs`` written to ``output`` (a folder, or an image file name for one input).

    ``also_read``: other folders the job reads (e.g. inpainting masks); the output folder must not be inside them
    either. Raises ``FileLayoutError`` naming the clash (or an output in an object store); nothing is created on
    disk.
    """
    refuse_store_output(output)
    output = Path(output)
    read_folders = [*inputs.folders, *map(Path, also_read)]
    if names_a_file(output):
        suffix = output.suffix.lower()
        if suffix not in IMAGE_SUFFIXES:
            raise FileLayoutError(f"--output {output}: {suffix} files cannot be written; use one of "
                                  f"{' '.join(IMAGE_SUFFIXES)}")
        if len(inputs.files) != 1:
            raise FileLayoutError(f"--output {output} names one image file, but {len(inputs.files)} images are "
                                  f"given; give a folder instead")
        root = output.parent
        targets = [(inputs.files[0], output)]
    else:
        if output.exists() and not output.is_dir():
            raise FileLayoutError(f"--output {output} is an existing file; give a folder (or an image file name "
                                  f"ending in {' '.join(IMAGE_SUFFIXES)} for a single input)")
        root = output
        targets = [(entry, output / entry.relative) for entry in inputs.files]
    for folder in read_folders:
        if _is_within(root, folder):
            where = "is" if root.resolve() == folder.resolve() else "is inside"
            raise FileLayoutError(f"the output folder {root} {where} the input folder {folder}, whose images (and "
                                  f"those of its subfolders) are read: choose an output folder outside it")
    sources = [entry.source for entry in inputs.files if isinstance(entry.source, Path)]  # objects: not local
    items = []
    for entry, target in targets:
        clash = next((s for s in sources if _same_file(target, s)), None)
        if clash is not None:
            raise FileLayoutError(f"the output {target} would overwrite the input {clash}; choose another output")
        items.append(_planned(entry, target, overwrite=overwrite))
    return OutputPlan(root=root, items=tuple(items), overwrite=overwrite)


def _planned(entry: InputFile, target: Path, *, overwrite: bool) -> PlannedOutput:
    suffix = target.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        written = f"{suffix} files" if suffix else "files without a suffix"
        return PlannedOutput(entry.source, entry.relative, target,
                             skip=f"{written} cannot be written (output formats: {' '.join(IMAGE_SUFFIXES)})")
    if target.exists() and not overwrite:
        return PlannedOutput(entry.source, entry.relative, target, exists=True,
                             skip=f"{target} already exists (--overwrite replaces it)")
    return PlannedOutput(entry.source, entry.relative, target)
