"""The Ray Data engine of a file job: the same per-image work as the local engine, on a pool of Ray actors.

Each actor (``PhotoWorker``) builds one job (``protocols.BatchJob``: model and detector loaded once) from a factory
the caller gives, and runs that job's per-image function (``photo``) on every image of the batches it receives. The
job hands every file it would write to a sink as a ``PendingWrite``; the actor returns them, and the driver, which
holds the output folder's lock and made the output plan, writes them with the shared writer (temporary file +
rename, never replacing a file unasked). So both engines run one per-image function and write through one writer, a
retried batch can never leave a half-written or doubled file, and the output folder only has to exist where the
driver runs. An input in an object store (``s3://...``, see ``stores``) travels as its name: the worker reads the
object itself.
Each image's ``ItemResult`` (outcome, faces, ``--save-json`` records) travels back with its files, and the driver
folds it into the run's summary once the files are written.

Faults: a worker that dies mid-batch is restarted and its batch retried by Ray (``max_restarts`` /
``max_task_retries`` on the actor pool); a batch that still fails after that is recorded as failed for each of its
images, and the others go on. A run started again skips the outputs already written (the output plan does: a file
under its final name is always complete).

Ray is imported only when this engine runs (``ray[data]`` is optional: ``require_ray`` says how to install it).
Joining Ray (what is shipped to the workers, the bounded wait, the resources checked) is ``ray_cluster``'s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from ..config import RayOptions
from ..plan import PlannedOutput
from ..protocols import JobFactory
from ..stores import StoreObject
from ..summary import ItemResult, JobSummary, Outcome, attempt
from ..threads import set_cpu_threads
from ..writer import PendingWrite
from .ray_cluster import connected

logger = logging.getLogger(__name__)


class WarningCollector(logging.Handler):
    """Keeps the warnings a worker logs while it works on one image, to be logged again by the driver."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[tuple[int, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.name, record.getMessage()))


class PhotoWorker:
    """A Ray Data callable class: one job per actor, built once; each call restores a batch of images and returns,
    per image, its result and the files to write (not written here)."""

    def __init__(self, make_job: JobFactory, threads: int, on_batch_start: Callable[[], None] | None = None) -> None:
        set_cpu_threads(threads)  # CPU sums depend on it (see RayOptions.threads)
        self.on_batch_start = on_batch_start
        self.pending: list[PendingWrite] = []
        self.job = make_job(sink=self.pending.append)  # loads the model and the detector

    def __call__(self, batch):
        import pyarrow as pa

        if self.on_batch_start is not None:
            self.on_batch_start()
        rows = [self._one(row) for row in batch.to_pylist()]
        return pa.Table.from_pylist(rows, schema=_result_schema())

    def _one(self, row: dict) -> dict:
        source = StoreObject(row["store"], row["source"]) if row["store"] else Path(row["source"])
        item = PlannedOutput(source, Path(row["relative"]), Path(row["target"]))
        self.pending.clear()
        collect = WarningCollector()
        root = logging.getLogger()
        root.addHandler(collect)
        try:
            result = self.job.photo(item)  # an object is read here, by this worker
        finally:
            root.removeHandler(collect)
        return {"index": row["index"], "outcome": result.outcome.value, "reason": result.reason,
                "bad_input": result.bad_input, "faces_found": result.faces_found,
                "faces_restored": result.faces_restored,
                "paths": [str(w.path) for w in self.pending], "data": [w.data for w in self.pending],
                "overwrite": [w.overwrite for w in self.pending],
                "keep_existing": [w.keep_existing for w in self.pending],
                "log": [f"{level}\t{name}\t{text}" for level, name, text in collect.lines],
                "records": json.dumps(list(result.records))}


def _result_schema():
    """Arrow schema of a worker's results (pyarrow comes with Ray; it is not imported with this module)."""
    import pyarrow as pa

    return pa.schema([("index", pa.int64()), ("outcome", pa.string()), ("reason", pa.string()),
                      ("bad_input", pa.bool_()), ("faces_found", pa.int64()), ("faces_restored", pa.int64()),
                      ("paths", pa.list_(pa.string())), ("data", pa.list_(pa.large_binary())),
                      ("overwrite", pa.list_(pa.bool_())), ("keep_existing", pa.list_(pa.bool_())),
                      ("log", pa.list_(pa.string())), ("records", pa.string())])


def _record(row: dict, item: PlannedOutput, summary: JobSummary) -> None:
    """Log the worker's warnings again, write the files it made (the shared writer: an output that appeared
    meanwhile is skipped, a failed write fails that image), and fold the image's result into ``summary``."""
    replay(row["log"])
    made = ItemResult(item.source, Outcome(row["outcome"]), row["reason"], bad_input=row["bad_input"],
                      faces_found=row["faces_found"], faces_restored=row["faces_restored"],
                      records=tuple(json.loads(row["records"])))
    writes = [PendingWrite(Path(p), d, overwrite=o, keep_existing=k)
              for p, d, o, k in zip(row["paths"], row["data"], row["overwrite"], row["keep_existing"])]
    summary.add(written(item, made, writes))


def replay(log: list[str]) -> None:
    """Log again, here, the warnings a worker logged (``WarningCollector``: "level\\tlogger\\ttext" lines)."""
    for line in log:
        level, name, text = line.split("\t", 2)
        logging.getLogger(name).log(int(level), "%s", text)


def written(item: PlannedOutput, made: ItemResult, writes: list[PendingWrite],
            on_written: Callable[[PendingWrite], object] | None = None) -> ItemResult:
    """The result of ``item`` once the driver has written the files a worker ``made`` it with (a failed or skipped
    item: as it is): ``made``, or the failure of a write (an output that appeared meanwhile is skipped, a failed
    write fails the image; its faces found still count, its faces restored then do not)."""
    if not made.succeeded:
        return made

    def write(_item: PlannedOutput) -> ItemResult:
        for pending in writes:
            pending.write()
            if on_written is not None:
                on_written(pending)
        return made

    return attempt(item, write, faces_found=made.faces_found)


def run_on_ray(items: Sequence[PlannedOutput], make_job: JobFactory, *, summary: JobSummary,
               options: RayOptions, on_done: Callable[[PlannedOutput], object] | None = None) -> None:
    """Restore ``items`` on Ray and write their results here, folding each into ``summary``.

    ``make_job(sink=...)`` (picklable; called once per actor) returns a ``BatchJob``, which hands every file to
    ``sink``. Paths inside ``make_job`` must be absolute, and every path readable on every node (a shared file
    system). With no Ray running in this process, Ray is started locally (``options.address`` None; stopped at the
    end) or the cluster joined, with ``options.working_dir`` shipped to the workers; a Ray already running here is
    used as it is (its job must ship the code: ``code_runtime_env``). The ``--save-json`` records of the images
    that succeeded are in ``summary.face_records`` (in the order they arrived; ``sides.merge_records`` orders them).
    """
    with ray_session(options) as ray:
        _run(ray, items, make_job, summary=summary, options=options, on_done=on_done)


@contextlib.contextmanager
def ray_session(options: RayOptions):
    """``with ray_session(options) as ray:`` Ray for one run: a Ray already running in this process as it is, else
    a local instance (``options.address`` None) or the cluster joined, with the pack's code shipped to the workers,
    shut down afterwards (``ray_cluster.connected``: a bounded wait for the address, the resources checked). Ray's
    own notices go to stderr; Ray Data's only with INFO logging."""
    with connected(options) as ray:
        if not logging.getLogger().isEnabledFor(logging.INFO):  # Ray Data's notices only with --verbose
            logging.getLogger("ray.data").setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the command line has its own
        context.max_errored_blocks = -1  # a batch that fails after its retries fails its images; the others go on
        with contextlib.redirect_stdout(sys.stderr):  # Ray prints its notices (a task retried...) to stdout
            yield ray


def mapped(ray, rows: list[dict], worker: type, make_job: JobFactory, *, options: RayOptions,
           blocks: int, batch_size: int | None, actors: int):
    """``rows`` in ``blocks`` blocks through a pool of ``actors`` actors of ``worker(make_job, threads,
    on_batch_start)``, each
    reserving ``options.threads`` CPUs and ``options.gpus_per_worker`` GPUs, restarted and their batch retried
    ``options.max_retries`` times."""
    remote_args: dict = {"max_restarts": options.max_retries, "max_task_retries": options.max_retries}
    with warnings.catch_warnings():  # Ray 2.60 names no parameter for the actors' retries: remote args it is
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        return ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
            worker, fn_constructor_kwargs={"make_job": make_job, "threads": options.threads,
                                           "on_batch_start": options.on_batch_start},
            batch_size=batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=options.gpus_per_worker or None, num_cpus=options.threads, **remote_args)


def input_row(index: int, item: PlannedOutput) -> dict:
    """What a worker gets of an input: names only (absolute: the workers run elsewhere), never the image's bytes."""
    store, source = ((item.source.root, item.source.path) if isinstance(item.source, StoreObject)
                     else ("", str(item.source.resolve())))
    return {"index": index, "store": store, "source": source, "relative": str(item.relative),
            "target": str(item.target.resolve())}


def _run(ray, items, make_job, *, summary, options, on_done) -> None:
    rows = [input_row(i, item) for i, item in enumerate(items)]
    blocks = max(1, -(-len(rows) // options.batch_size))
    dataset = mapped(ray, rows, PhotoWorker, make_job, options=options, blocks=blocks, batch_size=options.batch_size,
                     actors=min(options.workers, blocks))
    done: set[int] = set()
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
        for row in batch.to_pylist():
            if row["index"] in done:  # a retried batch whose first result also arrived: written once
                continue
            done.add(row["index"])
            item = items[row["index"]]
            _record(row, item, summary)
            if on_done is not None:
                on_done(item)
    fail_missing(items, done, summary=summary, options=options, on_done=on_done)


def fail_missing(items: Sequence[PlannedOutput], done: set[int], *, summary: JobSummary, options: RayOptions,
                 on_done: Callable[[PlannedOutput], object] | None) -> None:
    """Record every item whose index is not in ``done`` as failed: its batch failed after Ray's retries."""
    for index, item in enumerate(items):
        if index not in done:
            summary.record(item.source, Outcome.FAILED,
                           f"its batch failed on Ray after {options.max_retries} retries (a worker crashed or "
                           f"raised; Ray's logs say why, e.g. /tmp/ray/session_latest/logs on the nodes)")
            if on_done is not None:
                on_done(item)
