"""cli.py run again after a run that failed or was killed: the rerun finishes what the first left out (faces.json,
the crops), removes the unfinished files of the dead run, and exits 0 once everything is there, with the same files
a run that never failed writes. Output files get the umask's mode."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from helpers import cmd, face, files_under, plain

import cli
from face_jobs import LOCK_NAME, writer
from face_jobs.job import Worker

FLAGS = ["--save-json", "--save-crops"]


def inputs(tmp: Path) -> Path:
    """a.jpg and b.jpg (one face each) and c.png (no face) under tmp/in."""
    face(tmp, "a.jpg"), face(tmp, "b.jpg"), plain(tmp, "c.png")
    return tmp / "in"


def run(tmp: Path, capsys) -> tuple[int, str]:
    """cli.main on tmp/in into tmp/out with FLAGS: (exit status, stderr)."""
    status = cli.main([*cmd(tmp, tmp / "in"), *FLAGS])
    return status, capsys.readouterr().err


def full_disk_for(monkeypatch, failing: str) -> None:
    """Every file whose temporary name starts with ``failing`` finds the disk full."""
    real = tempfile.mkstemp

    def mkstemp(*args, prefix: str = "", **kwargs):
        if prefix.startswith(failing):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(writer.tempfile, "mkstemp", mkstemp)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> dict[str, bytes]:
    """What a run that never failed writes."""
    tmp = tmp_path_factory.mktemp("fresh")
    assert cli.main([*cmd(tmp, inputs(tmp)), *FLAGS]) == 0
    written = files_under(tmp / "out")
    assert sorted(written) == ["a.jpg", "b.jpg", "c.png", "crops/a.jpg_face0_aligned.png",
                               "crops/a.jpg_face0_restored.png", "crops/b.jpg_face0_aligned.png",
                               "crops/b.jpg_face0_restored.png", "faces.json"]
    report = json.loads(written["faces.json"])
    assert [(r["file"], r["image"], len(r["faces"])) for r in report["images"]] == [("a.jpg", 0, 1), ("b.jpg", 1, 1),
                                                                                     ("c.png", 2, 0)]
    return written


@pytest.mark.parametrize("failing", [".b.jpg.", ".b.jpg_face0_restored.png."], ids=["output image", "crop"])
def test_a_rerun_after_a_full_disk_completes_faces_json_and_the_crops(tmp_path, monkeypatch, capsys, fresh, failing):
    inputs(tmp_path)
    full_disk_for(monkeypatch, failing)
    status, err = run(tmp_path, capsys)
    assert status == 1 and "failed" in err and "disk full" in err, err
    first = files_under(tmp_path / "out")
    assert "b.jpg" not in first  # its crops come first: a crop that fails leaves no output image
    assert [r["file"] for r in json.loads(first["faces.json"])["images"]] == ["a.jpg", "c.png"]
    monkeypatch.undo()
    status, err = run(tmp_path, capsys)
    assert status == 0, err
    assert "appeared while this run was working" not in err
    assert files_under(tmp_path / "out") == fresh  # as if the first run had not failed
    status, err = run(tmp_path, capsys)
    lines = err.strip().splitlines()
    assert status == 0 and len(lines) == 3 and all(line.endswith("already exists (--overwrite replaces it)")
                                                   for line in lines), err  # nothing left to do


def test_a_killed_run_is_completed_and_its_unfinished_files_removed(tmp_path, monkeypatch, capsys, fresh):
    """A run killed (SIGKILL) after its first image: no faces.json, a stale lock, half a file; and an earlier
    version's output written before its crops, the crops missing."""
    real_photo, calls = Worker.photo, []

    def photo(self, item):
        calls.append(item)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stops the run where it is, as a kill would (faces.json is written at the end)
        return real_photo(self, item)

    inputs(tmp_path)
    monkeypatch.setattr(Worker, "photo", photo)
    status, _ = run(tmp_path, capsys)
    assert status == 130 and sorted(files_under(tmp_path / "out")) == ["a.jpg", "crops/a.jpg_face0_aligned.png",
                                                                       "crops/a.jpg_face0_restored.png"]
    monkeypatch.undo()
    out = tmp_path / "out"
    (out / "crops" / "a.jpg_face0_restored.png").unlink()  # an output without its crop (written before it, once)
    (out / ".b.jpg.x1y2z3_q.part").write_bytes(b"half of b")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    (out / LOCK_NAME).write_text(f"{dead} {socket.gethostname()}\n")
    status, err = run(tmp_path, capsys)
    assert status == 0, err
    assert files_under(out) == fresh  # the .part and the lock gone, faces.json and the crops complete


def test_a_live_runs_unfinished_file_is_left_alone(tmp_path, capsys):
    inputs(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".a.jpg.abcdefgh.part").write_bytes(b"being written")
    (out / LOCK_NAME).write_text(f"{os.getppid()} {socket.gethostname()}\n")  # a live run (our parent) holds it
    status, err = run(tmp_path, capsys)
    assert status == 1 and "another run (process" in err, err
    assert sorted(p.name for p in out.iterdir()) == [".a.jpg.abcdefgh.part", LOCK_NAME]


def test_faces_json_that_is_not_a_report_is_not_replaced_unasked(tmp_path, capsys):
    inputs(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "faces.json").write_text("my notes")
    status, err = run(tmp_path, capsys)
    assert status == 2 and err.strip().endswith("faces.json exists and is not a face report of this tool (version 1) "
                                                "that could be completed; move it away, or give --overwrite to "
                                                "replace it"), err
    assert (tmp_path / "out" / "faces.json").read_text() == "my notes"


def test_outputs_get_the_umasks_mode(tmp_path):
    """A real run under umask 027: every file written is 0640 (mkstemp alone would make them 0600)."""
    args = [sys.executable, str(REPO_ROOT / "cli.py"), *cmd(tmp_path, face(tmp_path, "a.jpg")), *FLAGS]
    done = subprocess.run(args, capture_output=True, text=True, cwd=str(REPO_ROOT), timeout=600, umask=0o027,
                          check=False)
    assert done.returncode == 0, done.stderr
    modes = {str(p.relative_to(tmp_path / "out")): oct(p.stat().st_mode & 0o777)
             for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert modes == dict.fromkeys(("a.jpg", "faces.json", "crops/a.jpg_face0_aligned.png",
                                   "crops/a.jpg_face0_restored.png"), "0o640")
