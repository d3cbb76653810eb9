"""Archives without surprises (issue 27), the cases built so far: names of any legal length, a folder named like the
convert subcommand, SIGTERM and SIGHUP stop a run as Ctrl-C does, and a lock left with this process's id (a restarted
container) is stale."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from helpers import cmd, face

import cli
from face_jobs.lock import LOCK_NAME, OutputLock
from face_jobs.writer import NAME_MAX, PART_PATTERN, part_prefix
from face_pipeline.errors import OutputLockedError


def test_temporary_names_fit_the_file_system_whatever_the_name():
    for name in ("a" * 250 + ".jpg", "é" * 124 + "x.jpg", "short.png"):
        prefix = part_prefix(name)
        assert len(os.fsencode(prefix)) + 8 + len(".part") <= NAME_MAX
        assert PART_PATTERN.match(prefix + "abcd_123.part")  # still found and removed as a stale part
    assert part_prefix("short.png") == ".short.png."
    assert part_prefix("é" * 124 + "x.jpg").encode("utf-8").decode("utf-8")  # cut at a character boundary


def test_a_photo_with_a_name_of_250_bytes_is_restored(tmp_path):
    name = "p" * 246 + ".jpg"  # 250 bytes: the temporary name used to be 265 ("file name too long")
    photo = face(tmp_path, name)
    assert cli.main(cmd(tmp_path, photo)) == 0
    assert (tmp_path / "out" / name).is_file()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".part")]


def test_a_photo_folder_named_convert_is_an_input(tmp_path, monkeypatch):
    face(tmp_path, "a.jpg")
    (tmp_path / "in").rename(tmp_path / "convert")
    monkeypatch.chdir(tmp_path)
    assert cli.is_convert(["convert", "in.onnx", "out.safetensors"])
    assert not cli.is_convert(["convert", "--model", "m.pth", "--output", "out"])
    assert not cli.is_convert(["convert", "--model=m.pth", "--output", "out"])
    assert cli.main(cmd(tmp_path, "convert")) == 0
    assert (tmp_path / "out" / "a.jpg").is_file()


def test_a_lock_left_with_this_process_id_is_stale(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{os.getpid()} {socket.gethostname()}\n")  # a restarted container's own id
    photo = face(tmp_path, "a.jpg")
    assert cli.main(cmd(tmp_path, photo)) == 0
    assert (out / "a.jpg").is_file() and not (out / LOCK_NAME).exists()
    with OutputLock(out), pytest.raises(OutputLockedError):  # held by this process: not stale
        OutputLock(out).acquire()
    assert not (out / LOCK_NAME).exists()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="boot ids and start times are read from /proc")
def test_a_lock_from_before_a_reboot_or_of_a_reused_process_id_is_stale(tmp_path):
    from face_jobs.lock import LockOwner, held_by_live_run

    out = tmp_path / "out"
    out.mkdir()
    live = LockOwner.this_process()
    parent = Path(f"/proc/{os.getppid()}/stat").read_text()
    parent_started = parent[parent.rindex(")") + 2:].split()[19]
    cases = {  # the parent process is alive: only the boot id or the start time tells a stale lock
        "the parent, as written by it": (LockOwner(os.getppid(), live.host, live.boot, parent_started), True),
        "an older version's file (pid and host only)": (f"{os.getppid()} {live.host}\n", True),
        "written before this machine's last boot": (LockOwner(os.getppid(), live.host, "0" * 8, parent_started),
                                                   False),
        "a process that reused a dead run's id": (LockOwner(os.getppid(), live.host, live.boot, "1"), False),
    }
    for name, (owner, alive) in cases.items():
        (out / LOCK_NAME).write_text(owner if isinstance(owner, str) else owner.line())
        assert held_by_live_run(out) is alive, name
    photo = face(tmp_path, "a.jpg")
    assert cli.main(cmd(tmp_path, photo)) == 0  # the last one is taken over
    assert (out / "a.jpg").is_file() and not (out / LOCK_NAME).exists()


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_a_run_like_ctrl_c(tmp_path, signum):
    for i in range(60):
        face(tmp_path, f"p{i:02d}.jpg")
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, str(REPO_ROOT / "cli.py"), *cmd(tmp_path, tmp_path / "in")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))
    deadline = time.monotonic() + 120
    while not any(out.glob("p*.jpg")) and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)  # the lock is taken and the first outputs are being written
    run.send_signal(signum)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 128 + signum, stderr
    assert f"stopped by {signal.Signals(signum).name}" in stderr
    assert "60 image(s):" in stdout  # the summary is printed
    assert not (out / LOCK_NAME).exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]
    restored = sorted(p.name for p in out.glob("p*.jpg"))
    assert 0 < len(restored) < 60
    # the next run finishes the job: the images written are skipped, the others restored
    again = subprocess.run([sys.executable, str(REPO_ROOT / "cli.py"), *cmd(tmp_path, tmp_path / "in")],
                           capture_output=True, text=True, cwd=str(tmp_path), timeout=600)
    assert again.returncode == 0 and len(list(out.glob("p*.jpg"))) == 60, again.stderr


def test_an_output_folder_deleted_mid_run_is_not_made_again_without_its_lock(tmp_path, monkeypatch, capsys):
    import shutil

    from face_jobs.job import Worker

    photos = [face(tmp_path, f"p{i}.jpg") for i in range(3)]
    out = tmp_path / "out"
    photo = Worker.photo

    def then_delete(self, item):
        result = photo(self, item)
        if item.source.name == "p0.jpg":  # a user (or a cleanup job) removes the folder after the first image
            shutil.rmtree(out)
        return result

    monkeypatch.setattr(Worker, "photo", then_delete)
    assert cli.main(cmd(tmp_path, *photos)) == 1
    captured = capsys.readouterr()
    assert f"{out} or its lock file {LOCK_NAME} was removed while this run was writing into it: stopped" in captured.err
    assert "3 image(s)" in captured.out  # the summary is printed
    assert not out.exists()  # not made again, without its lock
