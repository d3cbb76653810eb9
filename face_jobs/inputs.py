"""The image files of a file job: files as given, folders with their images and those of their direct subfolders;
the same for object-store URIs (``s3://bucket/prefix``: see ``stores``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from face_pipeline.errors import FileLayoutError
from face_pipeline.image import IMAGE_SUFFIXES

from .stores import Source, is_uri, list_store_images, redacted


@dataclass(frozen=True)
class InputFile:
    """One image to process: where it is read (a local file or an object), and its name under the output folder
    (subfolder kept)."""

    source: Source
    relative: Path


@dataclass(frozen=True)
class JobInputs:
    """Every input file, in order, and the local folders they were gathered from (an output must not land in
    those)."""

    files: tuple[InputFile, ...]
    folders: tuple[Path, ...]


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def collect_inputs(items: Sequence[str | Path]) -> JobInputs:
    """Gather the images of ``items`` (files as they are, whatever their suffix; folders with their images of
    ``IMAGE_SUFFIXES`` and those of their direct subfolders, kept as subfolders of the output). A URI
    (``s3://bucket/prefix``) is listed the same way (``stores.list_store_images``).

    A subfolder named ``crops`` or ``annotated`` is an input folder like any other: a run's own side-output folders
    are under its output folder, which ``plan.plan_outputs`` never lets land inside an input folder (links resolved),
    so they are never read as inputs.

    Raises ``FileLayoutError`` for a missing input, no image at all, or two inputs that would get one output name.
    """
    found: list[InputFile] = []
    folders: list[Path] = []
    for item in items:
        if is_uri(item):
            found += [InputFile(source, relative) for source, relative in list_store_images(str(item))]
            continue
        path = Path(item)
        if path.is_dir():
            folders.append(path)
            found += [InputFile(p, Path(p.name)) for p in _images_in(path)]
            for sub in sorted(p for p in path.iterdir() if p.is_dir()):
                found += [InputFile(p, Path(sub.name) / p.name) for p in _images_in(sub)]
        elif path.is_file():
            found.append(InputFile(path, Path(path.name)))
        else:
            raise FileLayoutError(f"input not found: {path}")
    if not found:
        raise FileLayoutError(f"no images ({' '.join(IMAGE_SUFFIXES)}) in {', '.join(map(redacted, items))}")
    seen: dict[Path, Source] = {}
    for entry in found:
        if entry.relative in seen:
            raise FileLayoutError(f"{seen[entry.relative]} and {entry.source} would both be written as "
                                  f"{entry.relative}; rename one")
        seen[entry.relative] = entry.source
    return JobInputs(files=tuple(found), folders=tuple(folders))
