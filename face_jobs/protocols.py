"""What an engine needs from a batch job, as a ``typing.Protocol``: the engines (``engines/``) are written against
it, and ``job.Worker`` is the job they run."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from .plan import PlannedOutput
from .summary import ItemResult
from .writer import PendingWrite


class BatchJob(Protocol):
    """A job with its model and detector loaded, handing every file it makes to the sink it was built with."""

    def photo(self, item: PlannedOutput) -> ItemResult:
        """Restore one input and hand its files to the sink; never raises for a per-input failure."""
        ...

    def video(self, items: Sequence[PlannedOutput]) -> Iterator[ItemResult]:
        """Restore ``items`` as the ordered frames of one video, yielding the result of each frame the plan does not
        skip once it is made (a skipped frame whose output exists is context, another ends a segment: ``frames``)."""
        ...

    def complete_sides(self, item: PlannedOutput) -> ItemResult:
        """Make the side outputs (record, crops) an input whose output image exists lacks."""
        ...


class JobFactory(Protocol):
    """Builds a ``BatchJob`` (loading its model and detector) that hands its files to ``sink``; picklable, so that
    each Ray worker builds its own."""

    def __call__(self, *, sink: Callable[[PendingWrite], None]) -> BatchJob: ...
