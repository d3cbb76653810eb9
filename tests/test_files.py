"""face_jobs: the output plan's clash checks, the atomic writer, the output-folder lock, the per-input results and
the summary folded from them, the one out-of-memory test, the frozen job configuration."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT

from face_jobs import LOCK_NAME, OutputLock, collect_inputs, plan_outputs, write_atomically, writer
from face_pipeline.errors import FileLayoutError, OutputExistsError, OutputLockedError, OutputWriteError


def _tree(root, *names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"image " + name.encode())
    return root


def test_collect_keeps_subfolders_and_refuses_name_clashes(tmp_path):
    _tree(tmp_path, "in/a.jpg", "in/sub/b.png", "in/sub/deeper/c.png", "in/notes.txt", "other/a.jpg")
    found = collect_inputs([tmp_path / "in"])
    assert [(f.source.name, str(f.relative)) for f in found.files] == [("a.jpg", "a.jpg"), ("b.png", "sub/b.png")]
    assert found.folders == (tmp_path / "in",)
    with pytest.raises(FileLayoutError, match=r"in/a\.jpg and .*other/a\.jpg would both be written as a\.jpg; rename"):
        collect_inputs([tmp_path / "in", tmp_path / "other" / "a.jpg"])
    with pytest.raises(FileLayoutError, match="input not found: .*missing"):
        collect_inputs([tmp_path / "missing"])


@pytest.mark.parametrize("output, message", [
    ("in", r"the output folder .*in is the input folder .*in, whose images"),
    ("in/sub", r"the output folder .*in/sub is inside the input folder .*in, whose images"),
    ("in/new/deeper", r"the output folder .*in/new/deeper is inside the input folder .*in"),
    ("masks/out", r"the output folder .*masks/out is inside the input folder .*masks"),
])
def test_output_folder_inside_a_folder_being_read(tmp_path, output, message):
    _tree(tmp_path, "in/a.jpg", "in/sub/a.jpg", "masks/a.png")
    with pytest.raises(FileLayoutError, match=message):
        plan_outputs(collect_inputs([tmp_path / "in"]), tmp_path / output, also_read=[tmp_path / "masks"])
    assert not (tmp_path / "in" / "new").exists()  # nothing created


def test_output_equal_to_an_input_even_through_a_hard_link(tmp_path):
    _tree(tmp_path, "in/a.jpg", "out/x.jpg")
    with pytest.raises(FileLayoutError, match=r"the output .*in/a\.jpg would overwrite the input .*in/a\.jpg"):
        plan_outputs(collect_inputs([tmp_path / "in" / "a.jpg"]), tmp_path / "in")
    os.link(tmp_path / "in" / "a.jpg", tmp_path / "out" / "a.jpg")  # the output's name is the input's file
    with pytest.raises(FileLayoutError, match=r"the output .*out/a\.jpg would overwrite the input .*in/a\.jpg"):
        plan_outputs(collect_inputs([tmp_path / "in" / "a.jpg"]), tmp_path / "out", overwrite=True)


def test_plan_marks_what_it_skips_and_names_crops_apart(tmp_path):
    _tree(tmp_path, "in/a.jpg", "in/a.png", "x.gif", "noext", "out/a.png")
    inputs = collect_inputs([tmp_path / "in", tmp_path / "x.gif", tmp_path / "noext"])
    plan = plan_outputs(inputs, tmp_path / "out")
    skips = {item.source.name: (item.skip, item.exists) for item in plan.items}
    assert skips["a.jpg"] == (None, False)
    assert skips["a.png"] == (f"{tmp_path / 'out' / 'a.png'} already exists (--overwrite replaces it)", True)
    assert skips["x.gif"][0].startswith(".gif files cannot be written (output formats: .png")
    assert skips["noext"][0].startswith("files without a suffix cannot be written")
    assert [i.source.name for i in plan_outputs(inputs, tmp_path / "out", overwrite=True).todo] == ["a.jpg", "a.png"]
    a_jpg, a_png = plan.items[:2]
    assert plan.crop_path(a_jpg, 0, "aligned") == tmp_path / "out" / "crops" / "a.jpg_face0_aligned.png"
    assert plan.crop_path(a_png, 0, "aligned") == tmp_path / "out" / "crops" / "a.png_face0_aligned.png"


def test_single_output_file(tmp_path):
    _tree(tmp_path, "a.png", "b.png")
    plan = plan_outputs(collect_inputs([tmp_path / "a.png"]), tmp_path / "res" / "x.jpg")
    assert plan.root == tmp_path / "res" and plan.items[0].target == tmp_path / "res" / "x.jpg"
    with pytest.raises(FileLayoutError, match=r"--output .*x\.jpg names one image file, but 2 images are given"):
        plan_outputs(collect_inputs([tmp_path / "a.png", tmp_path / "b.png"]), tmp_path / "x.jpg")
    (tmp_path / "taken.jpg").mkdir()  # an existing folder with an image-like name stays a folder
    assert plan_outputs(collect_inputs([tmp_path / "a.png"]), tmp_path / "taken.jpg").root == tmp_path / "taken.jpg"
    (tmp_path / "notes").write_bytes(b"")
    with pytest.raises(FileLayoutError, match=r"--output .*notes is an existing file; give a folder"):
        plan_outputs(collect_inputs([tmp_path / "b.png"]), tmp_path / "notes")


def test_atomic_write_never_replaces_unasked(tmp_path):
    target = tmp_path / "sub" / "a.jpg"
    write_atomically(target, b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(OutputExistsError, match=r"a\.jpg already exists .*it was kept as it is"):
        write_atomically(target, b"second")
    assert target.read_bytes() == b"first"
    write_atomically(target, b"third", overwrite=True)
    assert target.read_bytes() == b"third"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.jpg"]  # no temporary file left


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def full_disk(fd, chunk):
        calls.append(1)
        if len(calls) == 1:
            return os.write(fd, chunk[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "_write_chunk", full_disk)
    with pytest.raises(OutputWriteError, match=r"could not write .*g3\.jpg: disk full"):
        write_atomically(tmp_path / "g3.jpg", b"x" * 93350)
    (tmp_path / "old.jpg").write_bytes(b"old")
    with pytest.raises(OutputWriteError, match="disk full"):
        write_atomically(tmp_path / "old.jpg", b"new", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.jpg"] and (tmp_path / "old.jpg").read_bytes() == b"old"
    (tmp_path / "file").write_bytes(b"")
    monkeypatch.undo()
    with pytest.raises(OutputWriteError, match=r"could not write .*file/a\.jpg: "):
        write_atomically(tmp_path / "file" / "a.jpg", b"x")  # its folder is a file


def test_lock_refuses_a_second_run_and_takes_over_a_dead_ones(tmp_path):
    folder = tmp_path / "out"
    with OutputLock(folder):
        assert (folder / LOCK_NAME).read_text().split()[0] == str(os.getpid())
        with pytest.raises(OutputLockedError, match=rf"another run \(process {os.getpid()} on .+\) is writing into "
                                                    rf".*out \(lock file .*{LOCK_NAME}\); wait for it to end"):
            OutputLock(folder).acquire()
    assert not folder.exists()  # created by the lock, nothing written: removed again
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    import socket

    (folder / LOCK_NAME).write_text(f"{dead.stdout.strip()} {socket.gethostname()}\n")
    with OutputLock(folder):  # its owner is gone: taken over
        (folder / "result.png").write_bytes(b"x")
    assert sorted(p.name for p in folder.iterdir()) == ["result.png"]  # the folder stays, the lock is gone


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_written_file_gets_the_mode_the_umask_gives(tmp_path, umask, mode):
    """mkstemp creates 0600 whatever the umask; an output gets 0666 less the umask, as any program's new file."""
    target = tmp_path / "sub" / "a.png"
    code = ("import sys; from face_jobs import write_atomically; "
            "write_atomically(sys.argv[1], b'x'); write_atomically(sys.argv[1], b'y', overwrite=True)")
    subprocess.run([sys.executable, "-c", code, str(target)], check=True, umask=umask, cwd=REPO_ROOT)
    assert oct(target.stat().st_mode & 0o777) == oct(mode)


def _parts(root, *names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"half a file")
    return root


def test_the_unfinished_files_of_dead_runs_are_removed_when_the_lock_is_taken(tmp_path):
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    out = _parts(tmp_path / "out", ".a.jpg.k3_x9a0q.part", "crops/sub/.b.png_face0_aligned.png.abcdefgh.part",
                 "annotated/.c.png.png.zzzzzzzz.part", "other/.d.png.12345678.part", "notes.part", ".x.part",
                 ".a.jpg.toolongname.part", "a.jpg")
    (out / LOCK_NAME).write_text(f"{dead} {socket.gethostname()}\n")  # the run that left them was killed
    (out / "other" / LOCK_NAME).write_text(f"{os.getppid()} {socket.gethostname()}\n")  # a live run's (our parent's)
    with OutputLock(out):
        pass
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert left == [".a.jpg.toolongname.part", ".x.part", "a.jpg", "notes.part", "other/.d.png.12345678.part",
                    f"other/{LOCK_NAME}"]
    (out / "other" / LOCK_NAME).unlink()
    inner = _parts(out / "inner", ".e.png.abcdefgh.part")
    (out / LOCK_NAME).write_text(f"{os.getppid()} {socket.gethostname()}\n")  # a live run (our parent) writes in out/
    with OutputLock(inner):
        pass
    assert (inner / ".e.png.abcdefgh.part").exists()  # it may be that run's file: left alone


@pytest.mark.parametrize("exc, oom", [
    (MemoryError(), True),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 8589934592 bytes"), True),
    (RuntimeError("MPS backend out of memory (MPS allocated: 9.00 GB)"), True),
    (RuntimeError("Out of memory on the device"), True),
    (RuntimeError("not enough memory: you tried to allocate 1073741824 bytes"), True),  # the jobs' old rule
    (RuntimeError("shape '[2, 3]' is invalid for input of size 5"), False),
    (ValueError("out of memory"), False),  # only what PyTorch or Python raise for a failed allocation
])
def test_one_out_of_memory_test_for_the_pipeline_and_the_jobs(exc, oom):
    """The pipeline's and the batch jobs' rules were two; they are one (the union of what both detected)."""
    from face_jobs import summary
    from face_pipeline import memory

    assert summary.is_out_of_memory is memory.is_out_of_memory
    assert memory.is_out_of_memory(exc) is oom


def test_a_per_input_failure_is_a_result_and_the_summary_folds_results(tmp_path):
    """``attempt`` tells per-input failures (a result) from errors that end the run (raised again), once for every
    engine; ``JobSummary.add`` counts each result and keeps the records of the inputs that succeeded."""
    from face_jobs import ItemResult, JobSummary, Outcome, PlannedOutput, attempt
    from face_pipeline.errors import InvalidImageError, OutputExistsError, RestoreError

    item = PlannedOutput(tmp_path / "a.jpg", Path("a.jpg"), tmp_path / "out" / "a.jpg")

    def raising(exc):
        def work(_item):
            raise exc
        return work

    unreadable = attempt(item, raising(InvalidImageError("a.jpg is not a readable image")), faces_found=2)
    assert unreadable == ItemResult(item.source, Outcome.SKIPPED, "a.jpg is not a readable image", bad_input=True,
                                    faces_found=2)
    appeared = attempt(item, raising(OutputExistsError("a.jpg already exists")))
    assert (appeared.outcome, appeared.bad_input) == (Outcome.SKIPPED, False)
    full = attempt(item, raising(RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")), faces_found=1)
    assert full.outcome is Outcome.FAILED and full.faces_found == 1 and full.reason == (
        "out of memory (CUDA out of memory.); try a smaller --batch-size or --scale, or another --device")
    assert attempt(item, raising(RestoreError("bad  face"))).reason == "bad face"
    with pytest.raises(RuntimeError, match="cuDNN error"):  # not a per-input failure: the run ends
        attempt(item, raising(RuntimeError("cuDNN error: bad param")))
    with pytest.raises(KeyError):
        attempt(item, raising(KeyError("bug")))
    from face_jobs.summary import failure

    other_frame = failure(item, InvalidImageError("frame_2.png is not a readable image"), own_input=False)
    assert other_frame.outcome is Outcome.FAILED  # a chunk's frame fails with another frame's error

    lines: list[str] = []
    summary = JobSummary(images=4, report=lines.append)
    done = ItemResult(item.source, Outcome.RESTORED, faces_found=2, faces_restored=2, records=({"file": "a.jpg"},))
    for result in (done, unreadable, full, ItemResult(item.source, Outcome.UNCHANGED)):
        summary.add(result)
    assert summary.line() == ("4 image(s): 1 restored, 1 unchanged, 1 skipped, 1 failed; faces: 5 found, 2 "
                              "restored")
    assert summary.face_records == [{"file": "a.jpg"}] and summary.exit_status == 1
    assert lines == [f"skipped {item.source}: a.jpg is not a readable image", f"failed {item.source}: {full.reason}"]


def test_the_job_configuration_is_frozen_and_built_from_the_flags(tmp_path, monkeypatch):
    """cli.py builds one frozen JobConfig from its flags (the stage records and the job's own settings); the Ray
    engine's workers get it with every path absolute."""
    import dataclasses

    import cli
    from face_jobs.config import JobConfig, RayOptions
    from face_pipeline.pipeline import PipelineOptions

    monkeypatch.chdir(tmp_path)
    args = cli.parse_args(["in", "--model", "sub/m.pth", "--output", "out", "--scale", "2", "--save-json",
                           "--engine", "ray", "--workers", "2", "--threads", "2"])
    config = cli.build_config(args)
    assert isinstance(config, JobConfig) and config.options == cli.build_options(args)
    assert config.options.paste.scale == 2 and config.save_json and not config.save_crops
    assert config.ray == RayOptions(workers=2, threads=2, working_dir=REPO_ROOT.resolve())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.overwrite = True  # type: ignore[misc]
    workers = config.for_workers()
    assert workers.model == str(tmp_path / "sub" / "m.pth") and workers.output == str(tmp_path / "out")
    assert Path(workers.detector_dir).is_absolute() and Path(workers.options.paste.parsing_dir).is_absolute()
    with pytest.raises(cli.UsageError, match="--inpaint-masks is only used with --mode inpaint"):
        JobConfig(inputs=("in",), output="out", options=PipelineOptions(), model="m.pth", detector_dir="d",
                  inpaint_masks="masks")
