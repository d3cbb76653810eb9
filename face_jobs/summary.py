"""What came of each input of a file job, and the job's summary folded from those results.

The per-input work (``job.Worker``) returns an ``ItemResult`` for each input: restored, unchanged (no face), skipped
(an input that cannot be used, or an output that already exists) or failed (writing failed, out of memory, a face
that cannot be restored or pasted), with its reason, its faces found and restored and its ``--save-json`` records.
``attempt`` is the one place a per-input failure is told from an error that ends the run: it calls the work and
turns the per-input errors into a skipped or failed result; any other exception propagates (the caller still prints
the summary). ``JobSummary.add`` folds results into the summary, which reports each skipped or failed input with its
reason (``JobSummary.report``, or the log).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import torch

from face_pipeline.errors import InvalidImageError, OutputExistsError, OutputWriteError, PasteError, RestoreError
from face_pipeline.memory import is_out_of_memory

from .plan import PlannedOutput
from .stores import Source

logger = logging.getLogger(__name__)


class Outcome(enum.Enum):
    RESTORED = "restored"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    FAILED = "failed"


#: per-input failures: recorded, and the loop goes on (with an exception ``is_out_of_memory`` says is one)
RECOVERABLE = (OutputWriteError, PasteError, RestoreError, MemoryError, torch.OutOfMemoryError)


def describe_failure(exc: BaseException) -> str:
    """One line for a per-input failure."""
    if is_out_of_memory(exc) and not isinstance(exc, RestoreError):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return f"out of memory ({first}); try a smaller --batch-size or --scale, or another --device"
    return " ".join(str(exc).split()) or type(exc).__name__


@dataclass(frozen=True)
class ItemResult:
    """What came of one input: its ``outcome`` (with the ``reason`` when skipped or failed; ``bad_input``: skipped
    because the input cannot be used, not because its output exists), the faces found in it and restored, and its
    ``--save-json`` records (kept by the summary only when the input succeeded)."""

    source: Source  # a local file, or an object (stores.StoreObject)
    outcome: Outcome
    reason: str = ""
    bad_input: bool = False
    faces_found: int = 0
    faces_restored: int = 0
    records: tuple[dict, ...] = ()

    @property
    def succeeded(self) -> bool:
        return self.outcome in (Outcome.RESTORED, Outcome.UNCHANGED)


def failure(item: PlannedOutput, exc: BaseException, *, own_input: bool = True, faces_found: int = 0) -> ItemResult:
    """The result of ``item`` whose work raised ``exc``, or ``exc`` raised again when it is not a per-input failure.
    An unreadable input (``InvalidImageError``) is skipped as a bad input when it is ``item``'s own (``own_input``;
    a frame of a chunk that fails with another frame's error fails instead), an output that appeared meanwhile is
    skipped, the ``RECOVERABLE`` errors and running out of memory fail ``item`` only."""
    if isinstance(exc, InvalidImageError):
        if own_input:
            return ItemResult(item.source, Outcome.SKIPPED, describe_failure(exc), bad_input=True,
                              faces_found=faces_found)
    elif isinstance(exc, OutputExistsError):
        return ItemResult(item.source, Outcome.SKIPPED, describe_failure(exc), faces_found=faces_found)
    elif not isinstance(exc, RECOVERABLE) and not (isinstance(exc, RuntimeError) and is_out_of_memory(exc)):
        raise exc
    logger.debug("details", exc_info=exc)
    return ItemResult(item.source, Outcome.FAILED, describe_failure(exc), faces_found=faces_found)


def attempt(item: PlannedOutput, work: Callable[[PlannedOutput], ItemResult], *, faces_found: int = 0) -> ItemResult:
    """``work(item)``, or its ``failure`` (``faces_found``: those already found in ``item``, kept when it fails; its
    faces restored count only when it succeeds: they are those of the files written).
    The result names ``item.source`` (work on a staged copy of an object names the object)."""
    try:
        result = work(item)
    except Exception as exc:  # noqa: BLE001 - failure() raises again what is not a per-input failure
        return failure(item, exc, faces_found=faces_found)
    return result if result.source == item.source else replace(result, source=item.source)


@dataclass
class JobSummary:
    """What a file job did, input by input."""

    images: int = 0  # inputs planned
    restored: int = 0
    unchanged: int = 0
    skipped: list[tuple[Source, str]] = field(default_factory=list)
    failed: list[tuple[Source, str]] = field(default_factory=list)
    bad_inputs: int = 0  # skipped because the input cannot be used (not because its output exists)
    faces_found: int = 0
    faces_restored: int = 0
    report: Callable[[str], None] | None = field(default=None, repr=False)  # gets each skip/fail line; None: logged
    face_records: list[dict] = field(default_factory=list, repr=False)  # --save-json: the inputs that succeeded

    def add(self, result: ItemResult) -> None:
        """Fold one input's result in: its faces, its outcome (reported when skipped or failed), its records."""
        self.faces_found += result.faces_found
        self.faces_restored += result.faces_restored
        self.record(result.source, result.outcome, result.reason or None, bad_input=result.bad_input)
        if result.succeeded:
            self.face_records += result.records

    def add_sides(self, result: ItemResult) -> None:
        """Fold the result of completing the side outputs of an input recorded as skipped (its output exists):
        its records when that worked, else the input moves to failed with the reason."""
        if result.succeeded:
            self.face_records += result.records
        else:
            self.fail_skipped(result.source, result.reason)

    def record(self, source: Source, outcome: Outcome, reason: str | None = None, *, bad_input: bool = False) -> None:
        if outcome is Outcome.RESTORED:
            self.restored += 1
        elif outcome is Outcome.UNCHANGED:
            self.unchanged += 1
        elif outcome is Outcome.SKIPPED:
            self.skipped.append((source, reason or ""))
            self.bad_inputs += bad_input
            self._report(logging.WARNING, f"skipped {source}: {reason}")
        else:
            self.failed.append((source, reason or ""))
            self._report(logging.ERROR, f"failed {source}: {reason}")

    def fail_skipped(self, source: Source, reason: str) -> None:
        """An input first recorded as skipped (its output exists) failed after all (completing its side outputs)."""
        self.skipped = [entry for entry in self.skipped if entry[0] != source]
        self.failed.append((source, reason))
        self._report(logging.ERROR, f"failed {source}: {reason}")

    def _report(self, level: int, line: str) -> None:
        if self.report is not None:
            self.report(line)
        else:
            logger.log(level, "%s", line)

    def skip_planned(self, items: Iterable[PlannedOutput]) -> None:
        """Record the inputs the plan already skips (an output that exists, or an input left out of --faces, is not
        a bad input)."""
        for item in items:
            if item.skip is not None:
                self.record(item.source, Outcome.SKIPPED, item.skip, bad_input=not (item.exists or item.left_out))

    @property
    def exit_status(self) -> int:
        """1 if an input failed, else 2 if an input could not be used, else 0."""
        return 1 if self.failed else 2 if self.bad_inputs else 0

    def line(self) -> str:
        return (f"{self.images} image(s): {self.restored} restored, {self.unchanged} unchanged, "
                f"{len(self.skipped)} skipped, {len(self.failed)} failed; faces: {self.faces_found} found, "
                f"{self.faces_restored} restored")

