"""The Ray Data engine of a file job: the same per-image work as the local engine, on a pool of Ray actors.

Each actor (``PhotoWorker``) builds one job (model and detector loaded once) from a factory the caller gives, and
runs that job's per-image function on every image of the batches it receives. The job hands every file it would
write to a sink as a ``PendingWrite``; the actor returns them, and the driver, which holds the output folder's lock
and made the output plan, writes them with the shared writer (temporary file + rename, never replacing a file
unasked). So both engines run one per-image function and write through one writer, a retried batch can never leave
a half-written or doubled file, and the output folder only has to exist where the driver runs. An input in an
object store (``s3://...``, see ``stores``) travels as its name: the worker reads the object itself.
The records a job keeps per image for a report (``face_records``: ``--save-json``) travel back with the image's
files, and the driver gathers them in input order, numbered as the local engine numbers them.

Faults: a worker that dies mid-batch is restarted and its batch retried by Ray (``max_restarts`` /
``max_task_retries`` on the actor pool); a batch that still fails after that is recorded as failed for each of its
images, and the others go on. A run started again skips the outputs already written (the output plan does: a file
under its final name is always complete).

Ray is imported only when this engine runs (``ray[data]`` is optional: ``require_ray`` says how to install it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .job import JobSummary, Outcome, run_each
from .plan import PlannedOutput
from .stores import StoreObject, staged
from .threads import DEFAULT_THREADS, check_threads, set_cpu_threads
from .writer import PendingWrite

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "ray[data]"'
#: test-only fault hook: when this variable names a file that does not exist, the first worker to get a batch
#: creates it and ends its process at once (as a crash or a killed node would), so the batch must be retried
CRASH_ONCE_ENV = "GPEN_RAY_TEST_CRASH_ONCE"
#: what a local Ray instance started by the engine may use for its object store (results travel through it)
LOCAL_OBJECT_STORE_BYTES = 512 * 1024 * 1024
#: what the workers need from the repository (shipped to every node as Ray's working_dir)
_NOT_SHIPPED = [".git", ".ci", "tests", "benchmarks", "example_workflows", "docs", "models", "__pycache__", "*.pth",
                "*.safetensors"]  # the bundled OpenCV YuNet (.onnx) is shipped: the default detector


class RayUnavailableError(ImportError):
    """``--engine ray`` without Ray Data installed."""


def require_ray():
    """The ``ray`` module with Ray Data, or ``RayUnavailableError`` saying how to install it."""
    try:
        import ray
        import ray.data  # the engine needs Ray Data, not only Ray core
    except ImportError as exc:
        raise RayUnavailableError(f"--engine ray needs Ray Data, which is not installed ({exc}); install it with: "
                                  f"{INSTALL_HINT}") from exc
    return ray


@dataclass(frozen=True)
class RayOptions:
    """How the job is spread over Ray: the cluster (None: a local instance started for the run and stopped after
    it), the actors (one model each), what each actor reserves, images per batch, and retries of a failed batch."""

    address: str | None = None
    workers: int = 1
    gpus_per_worker: float = 0.0
    #: the CPU threads each actor computes with (PyTorch's and OpenCV's), and the CPUs it reserves: CPU pixels
    #: depend on the thread count (``threads.py``), so they are the local engine's when it uses as many (``--threads``
    #: sets both); the GPU's do not depend on it
    threads: int = DEFAULT_THREADS
    batch_size: int = 4  # images per map_batches call
    max_retries: int = 3  # restarts of a dead actor, and retries of the batch it held
    #: shipped to the workers so they import this code, when run_on_ray starts or joins Ray (None: not shipped)
    working_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.workers < 1 or self.batch_size < 1 or self.max_retries < 0:
            raise ValueError(f"workers and batch_size must be at least 1 and max_retries at least 0; got "
                             f"{self.workers}, {self.batch_size}, {self.max_retries}")
        if not 0 <= self.gpus_per_worker < 1e6:
            raise ValueError(f"gpus_per_worker must be 0 or more; got {self.gpus_per_worker}")
        check_threads(self.threads)


class WarningCollector(logging.Handler):
    """Keeps the warnings a worker logs while it works on one image, to be logged again by the driver."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[tuple[int, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.name, record.getMessage()))


def crash_once_if_asked() -> None:
    marker = os.environ.get(CRASH_ONCE_ENV)
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    logger.warning("%s: this worker (pid %d) ends itself now, as a test asked", CRASH_ONCE_ENV, os.getpid())
    os._exit(3)


class PhotoWorker:
    """A Ray Data callable class: one job per actor, built once; each call restores a batch of images and returns,
    per image, its outcome and the files to write (not written here)."""

    def __init__(self, make_job: Callable[..., object], threads: int) -> None:
        set_cpu_threads(threads)  # CPU sums depend on it (see RayOptions.threads)
        self.pending: list[PendingWrite] = []
        self.job = make_job(sink=self.pending.append)  # loads the model and the detector

    def __call__(self, batch):
        import pyarrow as pa

        crash_once_if_asked()
        rows = [self._one(row) for row in batch.to_pylist()]
        return pa.Table.from_pylist(rows, schema=_result_schema())

    def _one(self, row: dict) -> dict:
        source = StoreObject(row["store"], row["source"]) if row["store"] else Path(row["source"])
        item = PlannedOutput(source, Path(row["relative"]), Path(row["target"]))
        summary = JobSummary(images=1, report=lambda _line: None)
        self.job.summary = summary  # per image: the counts travel back with the result
        self.pending.clear()
        records = getattr(self.job, "face_records", None)
        if records is not None:
            records.clear()
        collect = WarningCollector()
        root = logging.getLogger()
        root.addHandler(collect)
        try:
            run_each([item], staged(self.job.photo), summary=summary)  # an object is read here, by this worker
        finally:
            root.removeHandler(collect)
        if summary.restored or summary.unchanged:
            outcome, reason = (Outcome.RESTORED if summary.restored else Outcome.UNCHANGED), ""
        elif summary.skipped:
            outcome, reason = Outcome.SKIPPED, summary.skipped[0][1]
        else:
            outcome, reason = Outcome.FAILED, summary.failed[0][1]
        return {"index": row["index"], "outcome": outcome.value, "reason": reason,
                "bad_input": bool(summary.bad_inputs), "faces_found": summary.faces_found,
                "faces_restored": summary.faces_restored,
                "paths": [str(w.path) for w in self.pending], "data": [w.data for w in self.pending],
                "overwrite": [w.overwrite for w in self.pending],
                "keep_existing": [w.keep_existing for w in self.pending],
                "log": [f"{level}\t{name}\t{text}" for level, name, text in collect.lines],
                "records": json.dumps(records or [])}


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
    meanwhile is skipped, a failed write fails that image), and count the image."""
    for line in row["log"]:
        level, name, text = line.split("\t", 2)
        logging.getLogger(name).log(int(level), "%s", text)
    summary.faces_found += row["faces_found"]
    outcome = Outcome(row["outcome"])
    if outcome in (Outcome.SKIPPED, Outcome.FAILED):
        summary.record(item.source, outcome, row["reason"], bad_input=row["bad_input"])
        return
    writes = [PendingWrite(Path(p), d, overwrite=o, keep_existing=k)
              for p, d, o, k in zip(row["paths"], row["data"], row["overwrite"], row["keep_existing"])]

    def write(_item: PlannedOutput) -> Outcome:
        for pending in writes:
            pending.write()
        summary.faces_restored += row["faces_restored"]
        return outcome

    run_each([item], write, summary=summary)


def code_runtime_env(folder: str | Path) -> dict:
    """The job-level runtime_env that ships this repository's code (``folder``: its root) to every worker, as
    ``ray.init(runtime_env=...)`` takes it. A caller that starts Ray itself before ``run_on_ray`` passes this."""
    return {"working_dir": str(folder), "excludes": list(_NOT_SHIPPED)}


def _test_hook_env() -> dict | None:
    return {"env_vars": {CRASH_ONCE_ENV: os.environ[CRASH_ONCE_ENV]}} if os.environ.get(CRASH_ONCE_ENV) else None


def run_on_ray(items: Sequence[PlannedOutput], make_job: Callable[..., object], *, summary: JobSummary,
               options: RayOptions, on_done: Callable[[PlannedOutput], None] | None = None,
               records: list[dict] | None = None) -> None:
    """Restore ``items`` on Ray and write their results here, recording each in ``summary``.

    ``make_job(sink=...)`` (picklable; called once per actor) returns an object with ``photo(item) -> Outcome`` (the
    local engine's per-image function) and a ``summary`` attribute, which hands every file to ``sink``. Paths inside
    ``make_job`` must be absolute, and every path readable on every node (a shared file system). With no Ray running
    in this process, Ray is started locally (``options.address`` None; stopped at the end) or the cluster joined,
    with ``options.working_dir`` shipped to the workers; a Ray already running here is used as it is (its job must
    ship the code: ``code_runtime_env``). ``records``: when given, the job's per-image ``face_records`` (a list the
    job appends one record per image to) are appended to it in the order of ``items``, their ``image`` numbers
    counting the images with a record, as one local job numbers them.
    """
    with ray_session(options) as ray:
        _run(ray, items, make_job, summary=summary, options=options, on_done=on_done, records=records)


@contextlib.contextmanager
def ray_session(options: RayOptions):
    """``with ray_session(options) as ray:`` Ray for one run: a Ray already running in this process as it is, else
    a local instance (``options.address`` None) or the cluster joined, with ``options.working_dir`` shipped to the
    workers, shut down afterwards. Ray's own notices go to stderr; Ray Data's only with INFO logging."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        init: dict = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        if options.working_dir is not None:
            init["runtime_env"] = code_runtime_env(options.working_dir)
        if options.address is None:
            init["object_store_memory"] = LOCAL_OBJECT_STORE_BYTES
        else:
            init["address"] = options.address
        ray.init(**init)
        started = True
    try:
        if not logging.getLogger().isEnabledFor(logging.INFO):  # Ray Data's notices only with --verbose
            logging.getLogger("ray.data").setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the command line has its own
        context.max_errored_blocks = -1  # a batch that fails after its retries fails its images; the others go on
        with contextlib.redirect_stdout(sys.stderr):  # Ray prints its notices (a task retried...) to stdout
            yield ray
    finally:
        if started:
            ray.shutdown()


def mapped(ray, rows: list[dict], worker: type, make_job: Callable[..., object], *, options: RayOptions,
           blocks: int, batch_size: int | None, actors: int):
    """``rows`` in ``blocks`` blocks through a pool of ``actors`` actors of ``worker(make_job, threads)``, each
    reserving ``options.threads`` CPUs and ``options.gpus_per_worker`` GPUs, restarted and their batch retried
    ``options.max_retries`` times."""
    remote_args: dict = {"max_restarts": options.max_retries, "max_task_retries": options.max_retries}
    with warnings.catch_warnings():  # Ray 2.60 names no parameter for the actors' retries: remote args it is
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        return ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
            worker, fn_constructor_kwargs={"make_job": make_job, "threads": options.threads},
            batch_size=batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=options.gpus_per_worker or None, num_cpus=options.threads, runtime_env=_test_hook_env(),
            **remote_args)


def input_row(index: int, item: PlannedOutput) -> dict:
    """What a worker gets of an input: names only (absolute: the workers run elsewhere), never the image's bytes."""
    store, source = ((item.source.root, item.source.path) if isinstance(item.source, StoreObject)
                     else ("", str(item.source.resolve())))
    return {"index": index, "store": store, "source": source, "relative": str(item.relative),
            "target": str(item.target.resolve())}


def _numbered(per_image: dict[int, list[dict]]) -> list[dict]:
    """The records of every image in input order, numbered 0, 1, ... as a local run appends them."""
    ordered = [record for index in sorted(per_image) for record in per_image[index]]
    for number, record in enumerate(ordered):
        record["image"] = number
        for face in record.get("faces", ()):
            face["image"] = number
    return ordered


def _run(ray, items, make_job, *, summary, options, on_done, records) -> None:
    rows = [input_row(i, item) for i, item in enumerate(items)]
    blocks = max(1, -(-len(rows) // options.batch_size))
    dataset = mapped(ray, rows, PhotoWorker, make_job, options=options, blocks=blocks, batch_size=options.batch_size,
                     actors=min(options.workers, blocks))
    done: set[int] = set()
    per_image: dict[int, list[dict]] = {}
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
        for row in batch.to_pylist():
            if row["index"] in done:  # a retried batch whose first result also arrived: written once
                continue
            done.add(row["index"])
            item = items[row["index"]]
            per_image[row["index"]] = json.loads(row["records"])
            _record(row, item, summary)
            if on_done is not None:
                on_done(item)
    fail_missing(items, done, summary=summary, options=options, on_done=on_done)
    if records is not None:
        records += _numbered(per_image)


def fail_missing(items: Sequence[PlannedOutput], done: set[int], *, summary: JobSummary, options: RayOptions,
                 on_done: Callable[[PlannedOutput], None] | None) -> None:
    """Record every item whose index is not in ``done`` as failed: its batch failed after Ray's retries."""
    for index, item in enumerate(items):
        if index not in done:
            summary.record(item.source, Outcome.FAILED,
                           f"its batch failed on Ray after {options.max_retries} retries (a worker crashed or "
                           f"raised; Ray's logs say why, e.g. /tmp/ray/session_latest/logs on the nodes)")
            if on_done is not None:
                on_done(item)
