"""``--faces FILE``: a file job's faces given instead of detected (``face_pipeline.given_faces``: the faces.json
``--save-json`` writes, edited, or ``{"a.jpg": [faces]}``).

The file is read and matched to the inputs once, before any work (``JobFaces.read``): each listed image is an input
by its name relative to its input folder, or by its bare file name when exactly one input has it. Inputs the file
does not list are skipped with the reason ("not in --faces FILE"), never detected: a file that lists some of a
folder's images restores those. Listed images that are no input are named in a warning. Every listed face is checked
against its input's size (from the header) before the model loads. A bad file is a ``FacesFileError`` (the command
line's exit status 2).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from face_pipeline.given_faces import GivenFaces, ImageKey, check_in_image, read_faces_file
from face_pipeline.types import DetectedFace

from .plan import PlannedOutput

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobFaces:
    """The faces file of a job and which of its images is which input (input name -> the file's key)."""

    given: GivenFaces
    files: Mapping[str, ImageKey]

    @classmethod
    def read(cls, path: str, items: Sequence[PlannedOutput]) -> JobFaces:
        """The faces file at ``path`` matched to the inputs ``items`` (``GivenFaces.match_files``); the images it
        lists that are no input are logged as a warning."""
        given = read_faces_file(path)
        files, unused = given.match_files([item.relative.as_posix() for item in items])
        if unused:
            shown = ", ".join(map(repr, unused[:10])) + (", ..." if len(unused) > 10 else "")
            logger.warning("--faces %s lists %d image(s) that are no input of this run: %s", path, len(unused), shown)
        return cls(given=given, files=files)

    def lists(self, item: PlannedOutput) -> bool:
        return item.relative.as_posix() in self.files

    def check(self, item: PlannedOutput, *, width: int, height: int) -> None:
        """``FacesFileError`` unless the faces of ``item`` fit its size (``given_faces.check_in_image``)."""
        check_in_image(self.given, self.files[item.relative.as_posix()], width=width, height=height)

    def faces(self, item: PlannedOutput) -> list[DetectedFace]:
        """The faces given for ``item`` (``image_index`` 0: a one-image batch); ``KeyError`` for one not listed."""
        return list(self.given.faces_of(self.files[item.relative.as_posix()]))
