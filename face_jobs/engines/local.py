"""The local engine: the job runs in this process, its files written as they are made, each input's result folded
into the summary as it comes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..plan import PlannedOutput
from ..protocols import BatchJob
from ..summary import JobSummary


def _nothing() -> None:
    pass


def run_local(job: BatchJob, items: Sequence[PlannedOutput], *, summary: JobSummary, video: bool = False,
              on_done: Callable[[], object] = _nothing) -> None:
    """``job.photo`` of each of ``items`` (``video``: ``job.video`` of them all, one sequence), each result folded
    into ``summary``; ``on_done`` after each input."""
    results = job.video(items) if video else map(job.photo, items)
    for result in results:
        summary.add(result)
        on_done()


def complete_sides(job: BatchJob, lacking: Sequence[PlannedOutput], *, summary: JobSummary,
                   on_done: Callable[[], object] = _nothing) -> None:
    """``job.complete_sides`` of each input in ``lacking`` (skipped: their outputs exist); one that fails moves from
    skipped to failed in ``summary`` (with its reason), the others go on."""
    for item in lacking:
        summary.add_sides(job.complete_sides(item))
        on_done()
