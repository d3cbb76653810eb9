"""Where each input's results go, decided once before any work, with every clash refused up front.

An output is a folder (the inputs keep their names and subfolders under it) or, for exactly one input, an image file
name (``--output restored.jpg``). The side outputs (``SideOutputs``: ``crops/``, ``annotated/``, ``faces.json``) go
into the output folder, or beside a single output file, in its folder.

The plan works on the real paths: every output location (the output folder, each output's folder, each side output's
folder) is resolved through symbolic links first. It refuses (``FileLayoutError``, one line naming the paths and what
to do), before anything is created:

- an output folder that is, or is inside, a folder whose images are read (an input folder, ``also_read``), and any
  output or side output that would land in one (e.g. through a link ``out/sub -> ../album``): this run or the next
  would read it as an input;
- an output path that is an input;
- side outputs that would land in the folder of an input file (``--output album/a_restored.jpg`` for
  ``album/a.jpg`` with ``--save-crops``: ``album/crops/`` would be read as photos by a folder run over ``album``):
  the message names another folder for the output;
- an output that is also a side output's path (an input ``crops/a.jpg_face0_aligned.png`` beside an input ``a.jpg``
  with ``--save-crops``), naming both.

An input subfolder named ``crops`` or ``annotated`` is an input like any other: the run's own side-output folders
are under the output folder, which is never inside an input folder. The plan marks inputs that cannot be written (a
suffix no encoder writes) or whose output already exists (unless ``overwrite``) as skipped, with the reason. Crops of
``a.jpg`` and ``a.png`` get distinct names (the crop name keeps the input's full name). Inputs may be objects in an
object store (``stores``); the output may not (``stores.refuse_store_output`` says why).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from face_pipeline.errors import FileLayoutError
from face_pipeline.image import IMAGE_SUFFIXES

from .inputs import InputFile, JobInputs
from .stores import Source, refuse_store_output

#: image formats people name that no encoder here writes: an output file name with one of these is refused
UNWRITABLE_IMAGE_SUFFIXES = (".gif", ".heic", ".heif", ".avif", ".jxl", ".jp2", ".ico", ".svg", ".ppm", ".pgm")
CROPS_FOLDER = "crops"
ANNOTATED_FOLDER = "annotated"
FACES_JSON = "faces.json"
_CROP_NAME = re.compile(r"(?P<input>.+)_face(?:0|[1-9][0-9]*)_(?:aligned|restored)\.png")


@dataclass(frozen=True)
class SideOutputs:
    """The side outputs a job writes beside its outputs: crops (``crops/``), annotated previews (``annotated/``),
    the face report (``faces.json``)."""

    crops: bool = False
    annotated: bool = False
    json: bool = False

    def flags(self) -> list[str]:
        """The command-line flags of the side outputs asked for."""
        return [flag for flag, on in (("--save-crops", self.crops), ("--save-annotated", self.annotated),
                                      ("--save-json", self.json)) if on]


@dataclass(frozen=True)
class PlannedOutput:
    """One input and its output file; ``skip`` says why it is not processed (None: it is)."""

    source: Source  # a local file, or an object (stores.StoreObject)
    relative: Path  # the input's name under the output folder (crops are named after it)
    target: Path
    skip: str | None = None
    exists: bool = False  # skipped because the output is already there (not a bad input)
    left_out: bool = False  # skipped because the user left it out (not in --faces FILE; not a bad input)


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

    def annotated_path(self, item: PlannedOutput) -> Path:
        """``root/annotated/<input name with suffix>.png`` (subfolders kept)."""
        return self.root / ANNOTATED_FOLDER / item.relative.parent / f"{item.relative.name}.png"

    @property
    def json_path(self) -> Path:
        """``root/faces.json``."""
        return self.root / FACES_JSON

    def skipping(self, item: PlannedOutput, reason: str, *, exists: bool = False,
                 left_out: bool = False) -> OutputPlan:
        """This plan with ``item`` marked as skipped for ``reason``."""
        items = tuple(replace(i, skip=reason, exists=exists, left_out=left_out) if i == item else i
                      for i in self.items)
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
                 also_read: Iterable[str | Path] = (), sides: SideOutputs = SideOutputs()) -> OutputPlan:
    """The ``OutputPlan`` of ``inputs`` written to ``output`` (a folder, or an image file name for one input), with
    the side outputs ``sides``.

    ``also_read``: other folders the job reads (e.g. inpainting masks); no output may land inside them either.
    Raises ``FileLayoutError`` naming the clash (or an output in an object store); nothing is created on disk.
    """
    refuse_store_output(output)
    output = Path(output)
    read_folders = [*inputs.folders, *map(Path, also_read)]
    single = names_a_file(output)
    if single:
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
    _refuse_targets_in(read_folders, [target for _, target in targets])
    items = []
    for entry, target in targets:
        clash = next((s for s in sources if _same_file(target, s)), None)
        if clash is not None:
            raise FileLayoutError(f"the output {target} would overwrite the input {clash}; choose another output")
        items.append(_planned(entry, target, overwrite=overwrite))
    plan = OutputPlan(root=root, items=tuple(items), overwrite=overwrite)
    fix = (f"write the image into another folder (e.g. --output {_elsewhere(output)}) or leave out "
           f"{' '.join(sides.flags())}" if single else "remove the link or choose another output folder")
    _refuse_sides_in(plan, sides, read_folders, sources, fix=fix)
    _refuse_sides_on_outputs(plan, sides)
    return plan


def _elsewhere(output: Path) -> Path:
    """Where a single output file could go instead of its folder: a sibling folder ``<folder>_restored``."""
    folder = output.absolute().parent
    return folder.parent / f"{folder.name}_restored" / output.name


def _through_link(path: Path, real: Path) -> str:
    """`` (that is REAL)`` when ``path`` reaches ``real`` through a symbolic link, else nothing."""
    return f" (that is {real})" if Path(os.path.abspath(path)) != real else ""


def _refuse_targets_in(read_folders: Sequence[Path], targets: Sequence[Path]) -> None:
    """``FileLayoutError`` for an output whose folder (symbolic links resolved, once per folder) is inside a folder
    whose images are read, e.g. ``out/sub -> ../album``."""
    seen: set[str] = set()
    for target in targets:
        key = os.path.normcase(os.path.abspath(target.parent))
        if key in seen:
            continue
        seen.add(key)
        real = target.parent.resolve()
        folder = next((f for f in read_folders if _is_within(real, f)), None)
        if folder is not None:
            raise FileLayoutError(f"the output {target} would be written into the input folder {folder}"
                                  f"{_through_link(target.parent, real)}, whose images are read (by this run and "
                                  f"the next): remove the link or choose another output folder")


def _refuse_sides_in(plan: OutputPlan, sides: SideOutputs, read_folders: Sequence[Path], sources: Sequence[Path],
                     *, fix: str) -> None:
    """``FileLayoutError`` for a side output whose folder (symbolic links resolved) is inside a folder whose images
    are read, or is the folder of an input file (or, for crops and previews, a direct subfolder of it: a folder run
    over that folder reads them as photos)."""
    places: dict[str, tuple[str, Path]] = {}  # a folder crops or previews go into, or faces.json -> (flag, path)
    for item in plan.items:
        for on, flag, path in ((sides.crops, "--save-crops", plan.crop_path(item, 0, "aligned")),
                               (sides.annotated, "--save-annotated", plan.annotated_path(item))):
            if on:
                places.setdefault(os.path.normcase(os.path.abspath(path.parent)), (flag, path.parent))
    if sides.json:
        places["json"] = ("--save-json", plan.json_path)
    file_folders = {_key(source.parent): source for source in sources}
    for flag, shown in places.values():
        images = flag != "--save-json"
        real = shown.resolve()
        folder = real if images else real.parent  # the folder the side output's files land in
        read = next((f for f in read_folders if _is_within(folder, f)), None)
        if read is not None:
            raise FileLayoutError(f"{flag} would write {shown}{_through_link(shown, real)} inside the input folder "
                                  f"{read}, whose images are read (by this run and the next): {fix}")
        near = [folder, folder.parent] if images else [folder]  # the folders whose folder run reads what lands there
        source = next((file_folders[k] for k in map(_key, near) if k in file_folders), None)
        if source is not None:
            raise FileLayoutError(f"{flag} would write {shown}{_through_link(shown, real)} beside or below "
                                  f"{source.parent.resolve()}, the folder of the input {source}, where a folder run "
                                  f"over it would read {'them as photos' if images else 'it beside them'}: {fix}")


def _refuse_sides_on_outputs(plan: OutputPlan, sides: SideOutputs) -> None:
    """``FileLayoutError`` for an output that is also a crop's or a preview's path (an input
    ``crops/a.jpg_face0_aligned.png`` beside an input ``a.jpg``), naming both inputs."""
    if not (sides.crops or sides.annotated):
        return
    crops: dict[tuple[str, str], PlannedOutput] = {}
    previews: dict[str, PlannedOutput] = {}
    for item in plan.items:
        if sides.crops:
            crops[(_key(plan.crop_path(item, 0, "aligned").parent), item.relative.name)] = item
        if sides.annotated:
            previews[_key(plan.annotated_path(item))] = item
    for item in plan.items:
        match = _CROP_NAME.fullmatch(item.target.name)
        owner = crops.get((_key(item.target.parent), match["input"])) if match else None
        flag = "--save-crops"
        if owner is None:
            owner, flag = previews.get(_key(item.target)), "--save-annotated"
        if owner is not None:
            raise FileLayoutError(f"{flag} would write a side output of the input {owner.source} as {item.target}, "
                                  f"the output of the input {item.source}: rename or move one of them, or leave "
                                  f"out {flag}")


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
