"""The per-input loop of a file job and its summary: one failing input never stops the others.

``run_each`` calls ``process(item)`` for every planned input and records what came of it in a ``JobSummary``:
restored, unchanged (no face), skipped (an input that cannot be used, or an output that already exists) or failed
(writing failed, out of memory, a face that cannot be restored or pasted). Any other exception ends the loop (the
caller still prints the summary). Each skipped or failed input is reported with its reason (``JobSummary.report``, or
the log).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import (
    InvalidImageError,
    OutputExistsError,
    OutputWriteError,
    PasteError,
    RestoreError,
)
from .plan import PlannedOutput

logger = logging.getLogger(__name__)


class Outcome(enum.Enum):
    RESTORED = "restored"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    FAILED = "failed"


#: per-input failures: recorded, and the loop goes on
RECOVERABLE = (OutputWriteError, PasteError, RestoreError, MemoryError, torch.OutOfMemoryError)
_OOM_MARKS = ("DefaultCPUAllocator", "out of memory", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is PyTorch (or Python) running out of memory: CUDA's OutOfMemoryError, the CPU allocator's
    RuntimeError, or MemoryError."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(mark in str(exc) for mark in _OOM_MARKS)


def describe_failure(exc: BaseException) -> str:
    """One line for a per-input failure."""
    if is_out_of_memory(exc) and not isinstance(exc, RestoreError):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return f"out of memory ({first}); try a smaller --batch-size or --scale, or another --device"
    return " ".join(str(exc).split()) or type(exc).__name__


@dataclass
class JobSummary:
    """What a file job did, input by input."""

    images: int = 0  # inputs planned
    restored: int = 0
    unchanged: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    bad_inputs: int = 0  # skipped because the input cannot be used (not because its output exists)
    faces_found: int = 0
    faces_restored: int = 0
    report: Callable[[str], None] | None = field(default=None, repr=False)  # gets each skip/fail line; None: logged

    def record(self, source: Path, outcome: Outcome, reason: str | None = None, *, bad_input: bool = False) -> None:
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

    def fail_skipped(self, source: Path, reason: str) -> None:
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
        """Record the inputs the plan already skips (an output that exists is not a bad input)."""
        for item in items:
            if item.skip is not None:
                self.record(item.source, Outcome.SKIPPED, item.skip, bad_input=not item.exists)

    @property
    def exit_status(self) -> int:
        """1 if an input failed, else 2 if an input could not be used, else 0."""
        return 1 if self.failed else 2 if self.bad_inputs else 0

    def line(self) -> str:
        return (f"{self.images} image(s): {self.restored} restored, {self.unchanged} unchanged, "
                f"{len(self.skipped)} skipped, {len(self.failed)} failed; faces: {self.faces_found} found, "
                f"{self.faces_restored} restored")


def run_each(items: Iterable[PlannedOutput], process: Callable[[PlannedOutput], Outcome], *, summary: JobSummary,
             on_done: Callable[[PlannedOutput], None] | None = None) -> None:
    """``process`` every item, recording its outcome in ``summary``; an unreadable input (``InvalidImageError``) is
    skipped, an output that appeared meanwhile is skipped, the ``RECOVERABLE`` errors and running out of memory fail
    that input only."""
    for item in items:
        try:
            summary.record(item.source, process(item))
        except InvalidImageError as exc:
            summary.record(item.source, Outcome.SKIPPED, describe_failure(exc), bad_input=True)
        except OutputExistsError as exc:
            summary.record(item.source, Outcome.SKIPPED, describe_failure(exc))
        except RECOVERABLE as exc:
            logger.debug("details", exc_info=exc)
            summary.record(item.source, Outcome.FAILED, describe_failure(exc))
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
            logger.debug("details", exc_info=exc)
            summary.record(item.source, Outcome.FAILED, describe_failure(exc))
        if on_done is not None:
            on_done(item)
