"""Side outputs of a file job (``faces.json``, the crops) and what an earlier run left unfinished.

A run writes each input's crops (and annotated image) before its output image, so an output image that exists
means its side outputs were written too, by the run that made it, if that run asked for them. ``faces.json`` is
written once, at the end of a run: a run that failed or was killed leaves it short or absent. So a rerun, which
skips the inputs whose output exists, first finds the side outputs they lack (``lacking_sides``): their record in
``faces.json``, their crops. It completes those (the caller detects, and restores where crops are missing, without
writing the output image again) and writes ``faces.json`` as the records it read merged with this run's
(``merge_records``): one record per file, each file once, in input order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from face_pipeline.errors import FileLayoutError
from face_pipeline.face_report import VERSION

from .plan import OutputPlan, PlannedOutput


def read_records(path: Path, *, overwrite: bool = False) -> dict[str, dict]:
    """The per-image records of an earlier run's ``faces.json`` by file name (``{}`` when there is none). A file
    that is not such a report is a ``FileLayoutError`` (it would be replaced), unless ``overwrite``: then it is
    replaced and nothing is read from it."""
    if not path.exists():
        return {}
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        images = report["images"] if isinstance(report, dict) and report.get("version") == VERSION else None
        records = {record["file"]: record for record in images} if isinstance(images, list) else None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        records = None
    if records is None:
        if overwrite:
            return {}
        raise FileLayoutError(f"{path} exists and is not a face report of this tool (version {VERSION}) that "
                              f"could be completed; move it away, or give --overwrite to replace it")
    return records


def merge_records(earlier: dict[str, dict], now: Iterable[dict], order: Iterable[str]) -> list[dict]:
    """One record per file: this run's (``now``) replace the ``earlier`` ones of the same file; files in ``order``
    (the run's inputs) first, in that order, then the other earlier ones as they were. Images are numbered again
    (``image`` of each record and of its faces)."""
    merged = {**earlier, **{record["file"]: record for record in now}}
    names = [name for name in order if name in merged]
    names += [name for name in merged if name not in set(names)]
    records = []
    for number, name in enumerate(names):
        record = {**merged[name], "image": number}
        record["faces"] = [{**face, "image": number} for face in record.get("faces", [])]
        records.append(record)
    return records


def restored_faces(record: dict) -> int:
    """How many faces of an image record were restored (each has its two crops)."""
    return sum(face.get("status") == "restored" for face in record.get("faces", []))


def lacking_sides(plan: OutputPlan, records: dict[str, dict], *, save_json: bool,
                  save_crops: bool) -> list[PlannedOutput]:
    """The inputs skipped because their output exists whose side outputs are not all there: no record in
    ``records`` (``save_json``), or crops missing (``save_crops``: every crop of the restored faces its record
    counts; without a record, the first face's, so an image without a face is looked at again by every rerun)."""
    lacking = []
    for item in plan.items:
        if not item.exists or not (save_json or save_crops):
            continue
        record = records.get(item.relative.as_posix())
        if save_json and record is None:
            lacking.append(item)
            continue
        if save_crops:
            faces = restored_faces(record) if record is not None else 1
            paths = (plan.crop_path(item, k, kind) for k in range(faces) for kind in ("aligned", "restored"))
            if any(not path.is_file() for path in paths):
                lacking.append(item)
    return lacking
