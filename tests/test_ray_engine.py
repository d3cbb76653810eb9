"""cli.py --engine ray on a local 2-CPU Ray instance: the same bytes as the local engine (with --faces too), a worker
killed mid-run, a run started again after two outputs were deleted, the photos read from an S3 bucket (moto's server,
tests/s3_double.py) with faces.json and the annotated previews, and the command line without Ray installed; what is
shipped to the workers (the pack's code, whatever lies beside cli.py), an address with nothing there (one line within
the stated wait) and a worker asking for more than the cluster has. Every run saves the crops too (--save-crops), so
they are compared as well.

The Ray tests skip when ``ray[data]`` is not installed (CI installs it from requirements-test.txt). They use the
compact 256 GPEN weights of tests/data and the pack's OpenCV YuNet, on 12 small photos made from grace_hopper.jpg.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, data_file
from helpers import files_under, make_photos
from helpers import ray_args as args
from ray_package import packed_files
from s3_double import BUCKET, CREDENTIALS, needs_moto, s3_server, s3_uri

from face_jobs import JobSummary, PlannedOutput, StoreObject
from face_jobs.config import RayOptions
from face_jobs.engines.ray_cluster import (
    CONNECT_SECONDS,
    SHIPPED,
    RayClusterError,
    address_port,
    check_resources,
    code_runtime_env,
)

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason='ray[data] is not installed (pip install "ray[data]"; CI installs it from '
                                      'requirements-test.txt)')
MODEL = ("gpen", "compact", "compact_256_cm1_n0.0625_s64.safetensors")
RESTORED = ("face_0.jpg", "face_1.jpg", "face_2.jpg", "face_3.jpg", "sub/crop_0.png", "sub/crop_1.png",
            "sub/crop_2.png")
UNCHANGED = ("noise.jpg", "plain_0.png", "plain_1.png", "plain_2.png")


def crash_once(marker: Path):
    """A ``RayOptions.on_batch_start`` hook: the first worker to start a batch creates ``marker`` and ends its
    process at once (as a crash or a killed node would), so Ray must retry that batch. A nested function, so that
    Ray's cloudpickle sends it by value (tests/ is not shipped to the workers)."""
    path = str(marker)

    def hook() -> None:
        import os

        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(3)

    return hook


def crashing_once(monkeypatch, marker: Path) -> None:
    """cli.py's jobs get ``crash_once(marker)`` as their Ray workers' ``on_batch_start``."""
    import dataclasses

    import cli

    build = cli.build_config

    def with_the_hook(parsed):
        config = build(parsed)
        return dataclasses.replace(config, ray=dataclasses.replace(config.ray, on_batch_start=crash_once(marker)))

    monkeypatch.setattr(cli, "build_config", with_the_hook)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_photos(tmp_path_factory.mktemp("ray") / "in")


def local_run(photos: Path, out: Path, *extra: str) -> tuple[int, Path, dict[str, bytes]]:
    """The local engine's run with the default --threads, in a process whose PyTorch would use 2 threads otherwise
    (as on any machine with several cores): the count the run uses is the Ray workers', whatever the machine."""
    import cli

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        status = cli.main(args(photos, out, *extra))
        assert torch.get_num_threads() == 2  # the process's own count, back after the run
    finally:
        torch.set_num_threads(threads)
    return status, out, files_under(out)


@pytest.fixture(scope="module")
def local_reference(photos, tmp_path_factory) -> tuple[int, Path, dict[str, bytes]]:
    return local_run(photos, tmp_path_factory.mktemp("local") / "out")


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in CREDENTIALS.items():  # the fake S3 credentials, inherited by the local Ray's workers
            patch.setenv(name, value)
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=300 * 1024 * 1024, log_to_driver=False,
                 runtime_env=code_runtime_env(REPO_ROOT))  # the workers import cli and face_pipeline from it
        yield ray
        ray.shutdown()


def summary_counts(out: str) -> str:
    """The summary's counts, "12 image(s): ...; faces: ...", without the time (the last line: Ray's own notices of a
    run may still arrive on stdout after it)."""
    line = out.strip().splitlines()[-1]
    return line.split("; ")[0] + "; " + line.split("; ")[1]


@needs_ray
def test_same_bytes_and_status_as_the_local_engine_by_default(photos, local_reference, ray_instance, tmp_path, capsys):
    import cli

    status, _, expected = local_reference
    capsys.readouterr()
    assert status == 2  # the unreadable image
    crops = {f"crops/{name}_face0_{kind}.png" for name in RESTORED for kind in ("aligned", "restored")}
    assert set(expected) == set(RESTORED + UNCHANGED) | crops
    assert cli.main(args(photos, tmp_path / "out", "--engine", "ray", "--workers", "2", "--ray-batch-size",
                         "3")) == status
    captured = capsys.readouterr()
    assert summary_counts(captured.out) == ("12 image(s): 7 restored, 4 unchanged, 1 skipped, 0 failed; faces: 7 "
                                            "found, 7 restored")
    assert f"skipped {photos / 'broken.jpg'}: broken.jpg is not a readable image" in captured.err
    assert files_under(tmp_path / "out") == expected  # byte for byte, and nothing else (no lock, no .part)
    for name in UNCHANGED:
        assert (tmp_path / "out" / name).read_bytes() == (photos / name).read_bytes()


@needs_ray
def test_faces_given_reach_the_workers_and_give_the_local_bytes(photos, local_reference, ray_instance, tmp_path):
    """--faces (issue 26) with the local engine's faces.json: each worker restores the faces given, no detector; the
    unreadable input, which faces.json does not list, is left out (exit status 0)."""
    import cli

    _, _, expected = local_reference
    _, described, _ = local_run(photos, tmp_path / "described", "--save-json")
    command = args(photos, tmp_path / "out", "--engine", "ray", "--workers", "2", "--faces",
                   str(described / "faces.json"))
    assert cli.main(command) == 0
    assert files_under(tmp_path / "out") == expected


@needs_ray
def test_a_model_set_reaches_the_workers_and_gives_the_local_bytes(photos, ray_instance, tmp_path):
    """--model twice (issue 25): each worker loads the set and routes each face as the local engine does."""
    import cli

    extra = ("--model", str(data_file("gpen", "compact", "compact_512_cm2_n0.0625_s64.safetensors")), "--save-json",
             "--scale", "2")
    status, _, expected = local_run(photos, tmp_path / "local", *extra)
    records = json.loads(expected["faces.json"])["images"]
    assert {f["model_size"] for r in records for f in r["faces"] if f["status"] == "restored"} == {256, 512}
    assert cli.main(args(photos, tmp_path / "out", "--engine", "ray", "--workers", "2", *extra)) == status
    assert files_under(tmp_path / "out") == expected


@needs_ray
def test_a_worker_that_dies_mid_batch_has_its_batch_retried(photos, local_reference, ray_instance, tmp_path,
                                                            monkeypatch, capsys):
    import cli

    marker = tmp_path / "crashed"
    crashing_once(monkeypatch, marker)
    assert cli.main(args(photos, tmp_path / "out", "--engine", "ray", "--workers", "2")) == local_reference[0]
    assert marker.is_file()  # a worker process did end itself on its first batch
    assert summary_counts(capsys.readouterr().out).startswith("12 image(s): 7 restored, 4 unchanged, 1 skipped, "
                                                              "0 failed")
    assert files_under(tmp_path / "out") == local_reference[2]  # every output, correct, and no partial file


@needs_ray
def test_a_run_started_again_recomputes_only_the_missing_outputs(photos, local_reference, ray_instance, tmp_path,
                                                                 capsys, caplog):
    import cli

    out = tmp_path / "out"
    command = args(photos, out, "--engine", "ray", "--workers", "2")
    assert cli.main(command) == 2
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    deleted = [out / "face_2.jpg", out / "plain_1.png"]
    for path in deleted:
        path.unlink()
    assert cli.main(command) == 2  # the unreadable image is reported again
    captured = capsys.readouterr()
    assert summary_counts(captured.out) == ("12 image(s): 1 restored, 1 unchanged, 10 skipped, 0 failed; faces: 1 "
                                            "found, 1 restored")  # 2 recomputed: 9 outputs exist + broken.jpg
    assert captured.err.count("already exists (--overwrite replaces it)") == 9
    assert "kept the existing" in caplog.text and "face_2.jpg_face0_restored.png" in caplog.text  # its crops stay
    assert files_under(out) == local_reference[2]
    for path, mtime in before.items():
        if path not in deleted:
            assert path.stat().st_mtime_ns == mtime  # not written again


@needs_ray
@needs_moto
def test_from_a_bucket_with_faces_json_and_previews_the_same_as_the_local_engine(photos, ray_instance, tmp_path,
                                                                                capsys):
    """Item 1 and 2 of issue 17: the workers read the objects themselves; faces.json (in input order) and the
    annotated previews are those of the local engine's run on the folder; a run started again computes only what is
    missing."""
    import cli

    described = ("--save-json", "--save-annotated")
    status, _, expected = local_run(photos, tmp_path / "local", *described)
    assert status == 2 and "faces.json" in expected
    assert {f"annotated/{name}.png" for name in RESTORED} <= set(expected)
    capsys.readouterr()
    out = tmp_path / "out"
    with s3_server(photos, "photos") as (endpoint, _client):
        source = s3_uri(endpoint, "photos")
        command = args(source, out, "--engine", "ray", "--workers", "2", "--ray-batch-size", "3")
        assert cli.main([*command, *described]) == status
        captured = capsys.readouterr()
        assert summary_counts(captured.out) == ("12 image(s): 7 restored, 4 unchanged, 1 skipped, 0 failed; faces: "
                                                "7 found, 7 restored")
        assert f"skipped s3://{BUCKET}/photos/broken.jpg: broken.jpg is not a readable image" in captured.err
        assert files_under(out) == expected  # images, crops, previews and faces.json, byte for byte
        deleted = [out / "face_2.jpg", out / "plain_1.png"]
        for path in deleted:
            path.unlink()
        assert cli.main(command) == 2
    captured = capsys.readouterr()
    assert summary_counts(captured.out) == ("12 image(s): 1 restored, 1 unchanged, 10 skipped, 0 failed; faces: 1 "
                                            "found, 1 restored")
    assert files_under(out) == expected


def make_frames(folder: Path) -> Path:
    """6 frames of one size: the face moving right by 6 px a frame, then a frame without it (a scene cut)."""
    photo = cv2.imread(str(data_file("faces", "grace_hopper.jpg")))
    h, w = photo.shape[:2]
    photo = cv2.resize(photo, (240 * w // h, 240), interpolation=cv2.INTER_AREA)
    folder.mkdir(parents=True)
    for i in range(5):
        cv2.imwrite(str(folder / f"frame_{i}.png"), photo[:, 6 * i:170 + 6 * i])
    cv2.imwrite(str(folder / "frame_5.png"), np.full((240, 170, 3), 90, np.uint8))
    return folder


@needs_ray
def test_a_frame_sequence_runs_whole_on_one_worker_with_the_local_engines_files(ray_instance, tmp_path, monkeypatch,
                                                                                capsys):
    """Item 3 of issue 17: --video-frames on Ray is one unit of work (the sequence, in order, on one actor) whose
    files are the local engine's, even when the worker dies at its start and the sequence is run again, and when a
    run resumes one whose last frames are missing; with temporal smoothing (issue 25), whose state the one actor
    carries from chunk to chunk as the local engine does."""
    import cli

    frames = make_frames(tmp_path / "frames")
    described = ("--video-frames", "--save-json", "--save-annotated", "--temporal-smoothing", "1")
    status, _, expected = local_run(frames, tmp_path / "local", *described)
    assert status == 0 and "faces.json" in expected
    assert {f"crops/frame_{i}.png_face0_restored.png" for i in range(5)} <= set(expected)
    capsys.readouterr()
    marker = tmp_path / "crashed"
    crashing_once(monkeypatch, marker)
    assert cli.main(args(frames, tmp_path / "out", *described, "--engine", "ray", "--workers", "2")) == status
    assert marker.is_file()  # the worker did end itself once
    assert summary_counts(capsys.readouterr().out) == ("6 image(s): 5 restored, 1 unchanged, 0 skipped, 0 failed; "
                                                       "faces: 5 found, 5 restored")
    assert files_under(tmp_path / "out") == expected
    for name in ("frame_3.png", "frame_4.png", "annotated/frame_4.png.png"):  # a run that stopped before them
        (tmp_path / "out" / name).unlink()
    assert cli.main(args(frames, tmp_path / "out", *described, "--engine", "ray")) == status
    assert summary_counts(capsys.readouterr().out) == ("6 image(s): 2 restored, 0 unchanged, 4 skipped, 0 failed; "
                                                       "faces: 2 found, 2 restored")
    assert files_under(tmp_path / "out") == expected  # frames 0-2 the context of 3 and 4 (issue 27, item 4)


def test_a_sequence_sent_again_after_a_crash_is_written_and_counted_once(tmp_path):
    """The driver's side of --video-frames on Ray, without Ray: a worker died after sending frame 0 and frame 1's
    image (not its outcome); the sequence run again sends everything again. Each file is written once, frame 1's
    image when its outcome arrives, and each frame counted once."""
    from face_jobs.engines.ray_sequence import _SequenceDriver

    out = tmp_path / "out"
    items = [PlannedOutput(tmp_path / f"f{i}.png", Path(f"f{i}.png"), out / f"f{i}.png") for i in range(3)]
    summary = JobSummary(images=3, report=lambda _line: None)
    driver = _SequenceDriver(items, summary=summary, on_done=None)

    def image(i: int, data: bytes) -> dict:
        return {"kind": "write", "path": str(items[i].target.resolve()), "data": data, "overwrite": False,
                "keep_existing": False}

    def outcome(i: int, value: str, reason: str = "", bad_input: bool = False) -> dict:
        found = int(value == "restored")
        return {"kind": "outcome", "index": i, "outcome": value, "reason": reason, "bad_input": bad_input,
                "faces_found": found, "faces_restored": found,
                "records": json.dumps([{"image": 0, "file": f"f{i}.png"}] if found else [])}

    crop = {"kind": "write", "path": str(out / "crops" / "f0.png_face0_restored.png"), "data": b"crop",
            "overwrite": False, "keep_existing": True}
    end = {"kind": "end", "log": ["30\tgpen.test\tno face in f2.png"]}
    first = [image(0, b"a0"), outcome(0, "restored"), crop, image(1, b"a1")]
    again = [image(0, b"b0"), outcome(0, "restored"), crop, image(1, b"b1"), outcome(1, "restored"),
             outcome(2, "skipped", "f2.png is not a readable image", True), end]
    for row in first + again:
        driver.take(row)
    assert files_under(out) == {"f0.png": b"a0", "f1.png": b"b1", "crops/f0.png_face0_restored.png": b"crop"}
    assert summary.line() == ("3 image(s): 2 restored, 0 unchanged, 1 skipped, 0 failed; faces: 2 found, 2 "
                              "restored")
    assert summary.skipped == [(items[2].source, "f2.png is not a readable image")] and summary.exit_status == 2
    assert summary.face_records == [{"image": 0, "file": "f0.png"}, {"image": 0, "file": "f1.png"}]
    assert driver.done == {0, 1, 2}


def test_a_worker_gets_the_names_of_its_inputs_never_their_bytes(tmp_path):
    from face_jobs.engines.ray_images import input_row

    obj = StoreObject("s3://bucket/photos?endpoint_override=minio:9000", "bucket/photos/sub/a.jpg")
    row = input_row(3, PlannedOutput(obj, Path("sub/a.jpg"), tmp_path / "out" / "sub" / "a.jpg"))
    assert row == {"index": 3, "store": "s3://bucket/photos?endpoint_override=minio:9000",
                   "source": "bucket/photos/sub/a.jpg", "relative": "sub/a.jpg",
                   "target": str((tmp_path / "out" / "sub" / "a.jpg").resolve())}
    local = input_row(0, PlannedOutput(Path("a.jpg"), Path("a.jpg"), tmp_path / "a.jpg"))
    assert local["store"] == "" and local["source"] == str(Path("a.jpg").resolve())


def test_without_ray_the_command_line_says_how_to_install_it(photos, tmp_path, monkeypatch, capsys):
    import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as when it is not installed
    assert cli.main(args(photos, tmp_path / "out", "--engine", "ray")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --engine ray needs Ray Data, which is not installed")
    assert err.rstrip().endswith('install it with: pip install "ray[data]"') and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("extra", "line"), [
    (["--workers", "2"], "error: --workers is only used with --engine ray"),
    (["--engine", "ray", "--workers", "0"], "error: --workers must be a whole number in 1..4096, got 0"),
    (["--engine", "ray", "--gpus-per-worker", "nan"], "error: --gpus-per-worker must be a number in 0..8, got nan"),
])
def test_engine_options_are_checked_before_any_work(photos, tmp_path, capsys, extra, line):
    import cli

    assert cli.main(args(photos, tmp_path / "out", *extra)) == 2
    assert capsys.readouterr().err.strip() == line and not (tmp_path / "out").exists()


def test_ray_is_not_imported_by_the_local_engine(tmp_path):
    import subprocess

    code = ("import cli, sys; status = cli.main([sys.argv[1], '--model', 'm.pth', '--output', sys.argv[2]]); "
            "print(status, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "no.png"), str(tmp_path / "out")],
                         capture_output=True, text=True, cwd=str(REPO_ROOT), timeout=120, check=False)
    assert out.stdout.strip() == "2 False", out.stderr


@needs_ray
def test_only_the_packs_code_is_shipped_whatever_lies_beside_cli_py(tmp_path):
    """A copy of the pack's code with what a user's folder holds beside cli.py (600 MB of photos, old outputs, a
    venv, .git, tests) and weights or caches dropped inside a package: Ray's own packaging walk (tests/ray_package.py)
    finds the pack's code only."""
    copy = tmp_path / "pack"
    for name in SHIPPED:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, copy / name)
    code = {p.relative_to(copy).as_posix(): p.stat().st_size for p in copy.rglob("*") if p.is_file()}
    (copy / "photos").mkdir()
    for index in range(6):
        with open(copy / "photos" / f"IMG_{index:04d}.jpg", "wb") as file:
            file.truncate(100 * 1024 * 1024)  # sparse: 600 MB that take no disk
    for junk in ("venv/lib/site.py", ".ci-venv/bin/python", ".git/objects/pack.pack", "tests/test_x.py",
                 "restored/IMG_0000.jpg", "gpen_arch/GPEN-BFR-2048.pth", "face_jobs/__pycache__/run.cpython-311.pyc"):
        (copy / junk).parent.mkdir(parents=True, exist_ok=True)
        (copy / junk).write_bytes(b"x" * 1000)
    shipped = packed_files(code_runtime_env(copy))
    assert shipped == code  # the packages' files, cli.py, the bundled detector: nothing else
    assert "face_pipeline/detection/bundled/face_detection_yunet_2023mar.onnx" in shipped and "cli.py" in shipped
    assert sum(shipped.values()) < 2 * 1024 * 1024
    folder = packed_files({"working_dir": str(copy)})  # the folder as a working_dir: the photos would go
    assert sum(folder.values()) > 600 * 1024 * 1024 and "photos/IMG_0000.jpg" in folder


@needs_ray
def test_an_address_with_nothing_there_is_one_line_within_the_stated_wait(photos, tmp_path):
    """In a process of its own (this one may hold the module's Ray, which a run uses as it is): cli.main's own time,
    imports left out. photos/sub has no unreadable input, so the error is the only line."""
    import subprocess

    code = ("import cli, sys, time; start = time.perf_counter(); status = cli.main(sys.argv[1:]); "
            "print(status, time.perf_counter() - start)")
    run = subprocess.run([sys.executable, "-c", code, *args(photos / "sub", tmp_path / "out", "--engine", "ray",
                                                             "--ray-address", "127.0.0.1:1")],
                         capture_output=True, text=True, cwd=str(REPO_ROOT), timeout=120, check=False)
    status, elapsed = run.stdout.split()
    assert status == "2" and float(elapsed) < CONNECT_SECONDS + 5, run.stderr
    assert run.stderr.count("\n") == 1 and not (tmp_path / "out").exists()
    assert run.stderr.startswith(f"error: --ray-address 127.0.0.1:1: no Ray cluster there (Connection refused; the "
                                 f"wait is at most {CONNECT_SECONDS:g} s); start one (ray start --head)")


@pytest.mark.parametrize(("address", "target"), [
    ("127.0.0.1:1", ("127.0.0.1", 1)), ("head.example:6379", ("head.example", 6379)), ("[::1]:6379", ("::1", 6379)),
    ("ray://head:10001", ("head", 10001)), ("ray://head", ("head", 10001)), ("auto", None), ("local", None),
])
def test_the_address_probed_is_the_one_given(address, target):
    assert address_port(address) == target


def test_a_worker_asking_for_more_than_the_cluster_has_is_refused_before_any_work():
    no_gpu = {"CPU": 2.0, "memory": 1e9, "node:127.0.0.1": 1.0}
    with pytest.raises(RayClusterError) as raised:
        check_resources(RayOptions(gpus_per_worker=1.0, threads=1), no_gpu)
    assert str(raised.value) == ("--gpus-per-worker 1: each Ray worker asks for 1 GPU(s), and the cluster has 0 "
                                 "(ray.cluster_resources(): 2 CPU, 0 GPU); use --gpus-per-worker 0 (the CPU), or join "
                                 "a cluster with GPU nodes (--ray-address)")
    with pytest.raises(RayClusterError, match=r"^--threads 4: each Ray worker asks for 4 CPU\(s\), and the cluster "
                                              r"has 2 .*; use --threads 2 or fewer"):
        check_resources(RayOptions(threads=4), no_gpu)
    check_resources(RayOptions(gpus_per_worker=0.5, threads=2), {"CPU": 2.0, "GPU": 1.0})  # fits: no error


@needs_ray
def test_a_gpu_asked_of_a_cluster_without_one_is_one_line_before_any_work(photos, ray_instance, tmp_path, capsys):
    import cli

    # photos/sub: no unreadable input, so the error is the only line
    status = cli.main(args(photos / "sub", tmp_path / "out", "--engine", "ray", "--gpus-per-worker", "1"))
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and not (tmp_path / "out").exists()
    assert err.startswith("error: --gpus-per-worker 1: each Ray worker asks for 1 GPU(s), and the cluster has 0 "
                          "(ray.cluster_resources(): 2 CPU, 0 GPU)")
