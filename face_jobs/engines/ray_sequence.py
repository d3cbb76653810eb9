"""The Ray engine for a frame sequence (``--video-frames``): the whole sequence is one unit of work, on one actor.

A video's faces are tracked across its frames in order, so its frames cannot be spread over workers: one actor
(``SequenceWorker``) runs the job's own sequence function (``BatchJob.video``: detect and track over every frame,
then restore in chunks) exactly as the local engine does, and streams what it makes back while it works: each file
to write, and each frame's result once its files are made. The driver writes the files with the shared writer (a
frame's image only once its outcome says it was made; crops and previews as they come) and counts each frame, so
memory stays bounded by a few chunks whatever the video's length.

Faults: a worker that dies is restarted and the sequence started again by Ray (``RayOptions.max_retries``); what the
driver already has is not written twice (frames already counted, and files already written, are passed over). A
sequence that still fails marks the frames it had not finished as failed.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from ..config import RayOptions
from ..plan import PlannedOutput
from ..protocols import JobFactory
from ..summary import ItemResult, JobSummary, Outcome
from ..threads import set_cpu_threads
from ..writer import PendingWrite
from .ray_images import WarningCollector, fail_missing, input_row, mapped, ray_session, replay, written

logger = logging.getLogger(__name__)

#: events a worker may hold before its job waits for them to be sent (a frame is one image and its crops)
QUEUED_EVENTS = 32
#: frames counted per result block sent back (a block is sent as soon as its frames are done)
FRAMES_PER_BLOCK = 4
_END = object()


def _event_schema():
    import pyarrow as pa

    return pa.schema([("kind", pa.string()), ("index", pa.int64()), ("path", pa.string()),
                      ("data", pa.large_binary()), ("overwrite", pa.bool_()), ("keep_existing", pa.bool_()),
                      ("outcome", pa.string()), ("reason", pa.string()), ("bad_input", pa.bool_()),
                      ("faces_found", pa.int64()), ("faces_restored", pa.int64()), ("records", pa.string()),
                      ("log", pa.list_(pa.string()))])


class SequenceWorker:
    """A Ray Data callable class: one job per actor, built once; a call gets a whole sequence (one row per frame, in
    order), runs ``job.video`` on it and yields its events (files to write, frame results, then the logged warnings)
    in blocks as they come."""

    def __init__(self, make_job: JobFactory, threads: int, on_batch_start: Callable[[], None] | None = None) -> None:
        set_cpu_threads(threads)  # CPU sums depend on it (see RayOptions.threads)
        self.on_batch_start = on_batch_start
        self._events: queue.Queue = queue.Queue(maxsize=QUEUED_EVENTS)  # a new one per sequence
        self.job = make_job(sink=self._sink)  # loads the model and the detector

    def _sink(self, pending: PendingWrite) -> None:
        self._events.put({"kind": "write", "path": str(pending.path), "data": pending.data,
                          "overwrite": pending.overwrite, "keep_existing": pending.keep_existing})

    def __call__(self, batch):
        import pyarrow as pa

        if self.on_batch_start is not None:
            self.on_batch_start()
        rows = batch.to_pylist()
        index_of = {row["source"]: row["index"] for row in rows}
        items = tuple(PlannedOutput(Path(r["source"]), Path(r["relative"]), Path(r["target"]), skip=r["skip"] or None,
                                    exists=r["exists"]) for r in rows)
        events: queue.Queue = queue.Queue(maxsize=QUEUED_EVENTS)
        self._events = events
        job = self.job
        failure: list[BaseException] = []

        def work() -> None:
            try:
                for result in job.video(items):  # unreadable frames first, then the others chunk by chunk
                    events.put(_result_event(index_of[str(result.source)], result))
            except BaseException as exc:  # noqa: BLE001 - raised again below, in the task, for Ray to retry
                failure.append(exc)
            finally:
                events.put(_END)

        collect = WarningCollector()
        logging.getLogger().addHandler(collect)
        thread = threading.Thread(target=work, name="gpen-sequence", daemon=True)
        thread.start()
        try:
            block: list[dict] = []
            frames = 0
            while (event := events.get()) is not _END:
                frames += event["kind"] == "outcome"
                block.append(event)
                if frames >= FRAMES_PER_BLOCK:
                    yield pa.Table.from_pylist(block, schema=_event_schema())
                    block, frames = [], 0
            thread.join()
        finally:
            logging.getLogger().removeHandler(collect)
        if failure:
            raise failure[0]
        block.append({"kind": "end", "log": [f"{level}\t{name}\t{text}" for level, name, text in collect.lines]})
        yield pa.Table.from_pylist(block, schema=_event_schema())


def _result_event(index: int, result: ItemResult) -> dict:
    return {"kind": "outcome", "index": index, "outcome": result.outcome.value, "reason": result.reason,
            "bad_input": result.bad_input, "faces_found": result.faces_found,
            "faces_restored": result.faces_restored, "records": json.dumps(list(result.records))}


def run_sequence_on_ray(items: Sequence[PlannedOutput], make_job: JobFactory, *, summary: JobSummary,
                        options: RayOptions, on_done: Callable[[PlannedOutput], object] | None = None) -> None:
    """Restore ``items`` (the frames of one sequence, in order) on one Ray actor and write their results here,
    folding each frame's result into ``summary``. Frames the plan skips are sent too but never counted here: those
    whose output exists are the sequence's context (``frames``), the others end a segment.

    ``make_job(sink=...)`` (picklable) returns a ``BatchJob`` whose ``video(items)`` (the local engine's sequence
    function) yields each frame's result and hands every file to ``sink``. Ray is started or joined as
    ``run_on_ray`` does (``ray_images.ray_session``); ``options.workers`` is not used.
    """
    with ray_session(options) as ray:
        rows = [{**input_row(i, item), "skip": item.skip or "", "exists": item.exists} for i, item in enumerate(items)]
        dataset = mapped(ray, rows, SequenceWorker, make_job, options=options, blocks=1, batch_size=None, actors=1)
        driver = _SequenceDriver(items, summary=summary, on_done=on_done)
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
            for row in batch.to_pylist():
                driver.take(row)
    fail_missing(items, driver.done, summary=summary, options=options, on_done=on_done)


class _SequenceDriver:
    """The driver's side of a sequence: writes each file once, counts each frame once (a sequence started again
    after a worker died sends what came before again)."""

    def __init__(self, items: Sequence[PlannedOutput], *, summary: JobSummary,
                 on_done: Callable[[PlannedOutput], object] | None) -> None:
        self.items, self.summary, self.on_done = items, summary, on_done
        self.targets = {str(item.target.resolve()): index for index, item in enumerate(items)}
        self.held: dict[int, dict[str, PendingWrite]] = {}  # a frame's image, until its outcome arrives
        self.written: set[str] = set()
        self.done = {index for index, item in enumerate(items) if item.skip is not None}  # counted by the plan
        self.ended = False

    def take(self, row: dict) -> None:
        kind = row["kind"]
        if kind == "write":
            self._file(row)
        elif kind == "outcome":
            self._frame(row)
        elif not self.ended:
            self.ended = True
            replay(row["log"])

    def _file(self, row: dict) -> None:
        path = row["path"]
        if path in self.written:
            return
        pending = PendingWrite(Path(path), row["data"], overwrite=row["overwrite"], keep_existing=row["keep_existing"])
        index = self.targets.get(path)
        if index is None:  # a crop or a preview: written now, as the local engine does
            pending.write()
            self.written.add(path)
        elif index not in self.done:  # sent again by a sequence run again: the later copy replaces the earlier
            self.held.setdefault(index, {})[path] = pending

    def _frame(self, row: dict) -> None:
        index = row["index"]
        if index in self.done:
            return
        self.done.add(index)
        item = self.items[index]
        made = ItemResult(item.source, Outcome(row["outcome"]), row["reason"], bad_input=row["bad_input"],
                          faces_found=row["faces_found"] or 0, faces_restored=row["faces_restored"] or 0,
                          records=tuple(json.loads(row["records"] or "[]")))
        writes = list(self.held.pop(index, {}).values())
        self.summary.add(written(item, made, writes, on_written=lambda pending: self.written.add(str(pending.path))))
        if self.on_done is not None:
            self.on_done(item)
