"""One file job from its configuration to its summary: inputs gathered and planned, every input's header read
(those that cannot be used skipped with the reason), the output folder locked, the work run on the configured engine
(``engines``), what an earlier run left out completed, ``faces.json`` written, the summary printed."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
import time
from collections.abc import Callable

from face_pipeline.errors import InvalidImageError
from face_pipeline.image import apply_budget_to_pillow

from .config import JobConfig, pick_device
from .engines.local import complete_sides, run_local
from .given import JobFaces
from .inputs import collect_inputs
from .job import Worker
from .lock import OutputLock
from .plan import OutputPlan, PlannedOutput, SideOutputs, plan_outputs
from .sides import lacking_sides, read_records
from .stores import source_size
from .summary import JobSummary
from .writer import process_umask


def probe_inputs(plan: OutputPlan, config: JobConfig, faces: JobFaces | None = None) -> OutputPlan:
    """Read every input's size from its header and skip (with the reason) those that cannot be used: unreadable,
    too large, beyond --max-output-size at the --scale chosen, without one of their masks (inpainting, region,
    protect). With ``faces`` (--faces), the inputs it does not list are skipped (not bad inputs: left out) and the
    faces of the others checked against their size (``FacesFileError``). (--video-frames: frames of another size
    than those before them start a new segment, ``frames``.)"""
    paste = config.options.paste
    masks = config.masks().values()
    for item in plan.todo:
        if faces is not None and not faces.lists(item):
            plan = plan.skipping(item, f"not in --faces {config.faces}", left_out=True)
            continue
        try:
            width, height = source_size(item.source)  # the image budget (image.check_budget) from the header
        except InvalidImageError as exc:
            plan = plan.skipping(item, str(exc))
            continue
        long_side = max(width, height)
        if isinstance(paste.scale, int) and paste.scale > 1 and long_side * paste.scale > paste.max_output_size:
            plan = plan.skipping(item, f"--scale {paste.scale} would make it {long_side * paste.scale} px on its "
                                       f"long side, above --max-output-size {paste.max_output_size}; use --scale "
                                       f"auto or raise --max-output-size")
        elif lacking := next(filter(None, (files.missing(item.relative) for files in masks)), None):
            plan = plan.skipping(item, lacking)
        elif faces is not None:
            faces.check(item, width=width, height=height)
    return plan


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def run_job(config: JobConfig, *, say: Callable[[str], None] = print, report: Callable[[str], None] = _stderr) -> int:
    """Run the job ``config`` describes; ``say`` gets the summary line, ``report`` each skipped or failed input.
    Returns the exit status (``JobSummary.exit_status``). Raises what ends a run (the errors of the model, the
    detector, the output layout; ``UsageError``)."""
    from tqdm import tqdm

    apply_budget_to_pillow()  # this process owns Pillow: its decompression-bomb limit is the pack's image budget
    process_umask()  # read once, before any thread writes: outputs get 0o666 less it, as any program's files
    if config.ray is None:
        pick_device(config.device)  # an unavailable device is a usage error before anything is read
    inputs = collect_inputs(config.inputs)
    plan = plan_outputs(inputs, config.output, overwrite=config.overwrite,
                        also_read=[files.path for files in config.masks().values() if files.path.is_dir()],
                        sides=SideOutputs(crops=config.save_crops, annotated=config.save_annotated,
                                          json=config.save_json))
    faces = JobFaces.read(config.faces, plan.items) if config.faces else None
    plan = probe_inputs(plan, config, faces)
    summary = JobSummary(images=len(plan.items), report=report)
    summary.skip_planned(plan.items)
    start = time.perf_counter()
    # an earlier run that failed or was killed: its faces.json records, and the side outputs its inputs lack
    earlier = read_records(plan.json_path, overwrite=config.overwrite) if config.save_json else {}
    lacking = [] if config.video_frames else lacking_sides(plan, earlier, save_json=config.save_json,
                                                           save_crops=config.save_crops)
    lacking = [item for item in lacking if faces is None or faces.lists(item)]  # never detected: left out
    if not plan.todo and not lacking:
        say(f"{summary.line()}; nothing to do")
        return summary.exit_status
    # a second run into this folder stops at the lock, and a Ray cluster that cannot run the job (nothing at its
    # address, too few resources for a worker) at engine_session: both before loading anything
    with OutputLock(plan.root), engine_session(config):
        job = Worker(config, plan, faces=faces) if config.ray is None else None  # ray: a Worker per Ray worker
        try:
            with tqdm(total=len(plan.todo) + len(lacking), unit="image", disable=None, file=sys.stderr) as bar:
                if job is not None:
                    # --video-frames: the whole sequence; frames whose output exists are context, not written
                    run_local(job, plan.items if config.video_frames else plan.todo, summary=summary,
                              video=config.video_frames, on_done=bar.update)
                else:
                    # built once here, on the CPU: the weights are checked (and the detector's fetched) with the
                    # local engine's errors before any worker starts; it completes the side outputs, writes the json
                    job = Worker(dataclasses.replace(config, device="cpu", dtype="fp32"), plan, faces=faces)
                    run_on_ray_engine(config, plan, summary, faces=faces, on_done=lambda _item: bar.update())
                complete_sides(job, lacking, summary=summary, on_done=bar.update)
            if config.save_json:
                job.write_json(earlier, summary.face_records)
        finally:
            say(f"{summary.line()}; {time.perf_counter() - start:.1f} s -> {plan.root}")
    return summary.exit_status


def engine_session(config: JobConfig) -> contextlib.AbstractContextManager:
    """``with engine_session(config):`` the engine's session for the run: Ray joined (or started) and its resources
    checked for ``config.ray`` (``ray_cluster.connected``; ``run_on_ray`` then uses it as it is), nothing for the
    local engine."""
    if config.ray is None:
        return contextlib.nullcontext()
    from .engines.ray_cluster import connected

    return connected(config.ray)


def run_on_ray_engine(config: JobConfig, plan: OutputPlan, summary: JobSummary, *, faces: JobFaces | None = None,
                      on_done: Callable[[PlannedOutput], object]) -> None:
    """``config.ray``: each Ray worker builds a ``Worker`` (model and detector loaded once) and runs its ``photo``
    on the images it gets (``--video-frames``: one worker runs ``video`` on the whole sequence); the files it makes
    are written here, under this run's lock, by the same writer. Paths are made absolute (the workers run
    elsewhere)."""
    from .engines.ray_images import run_on_ray
    from .engines.ray_sequence import run_sequence_on_ray

    if config.ray is None:
        raise ValueError("this job has no Ray options (config.ray): the local engine runs it")
    make_job = functools.partial(Worker, config.for_workers(),
                                 dataclasses.replace(plan, root=plan.root.resolve(), items=()), faces=faces)
    if config.video_frames:  # a sequence: one unit of work, in order (frames whose output exists are its context)
        run_sequence_on_ray(plan.items, make_job, summary=summary, options=config.ray, on_done=on_done)
    else:
        run_on_ray(plan.todo, make_job, summary=summary, options=config.ray, on_done=on_done)
