"""cli.py fed the bad inputs of issue 11, one table row each: the exit status, the one line that says what happened,
and what is on disk afterwards (inputs byte-identical, no partial or lock file left, nothing replaced unasked).

Rows that must be refused before the model loads name a model file that does not exist: reaching the model would
print "checkpoint not found" instead of the expected line.
"""

from __future__ import annotations

import errno
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
from conftest import REPO_ROOT
from helpers import cmd, face, files_under, plain, write_flat_png

from face_jobs import LOCK_NAME
from face_pipeline.pipeline import Pipeline


def lying_bmp(tmp: Path, name: str) -> Path:
    """A small BMP whose header claims 200000x268435 pixels (a damaged file, or a decompression bomb)."""
    path = plain(tmp, name, ".bmp")
    data = bytearray(path.read_bytes())
    data[18:26] = (200000).to_bytes(4, "little") + (268435).to_bytes(4, "little")  # BITMAPINFOHEADER width, height
    path.write_bytes(bytes(data))
    return path


def outputs(tmp: Path) -> dict[str, bytes]:
    return files_under(tmp / "out") if (tmp / "out").exists() else {}


def fail_first_write_midway(monkeypatch):
    """The first file written gets half its bytes, then the disk is full."""
    from face_jobs import writer

    calls = []
    real = writer._write_chunk

    def full_disk(fd, chunk):
        calls.append(len(chunk))
        if len(calls) == 1:
            return real(fd, chunk[: len(chunk) // 2])
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, chunk)

    monkeypatch.setattr(writer, "_write_chunk", full_disk)


def out_of_memory_once(monkeypatch):

    real, calls = Pipeline.restore_and_paste, []

    def restore(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: "
                               "you tried to allocate 81604378624 bytes.")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "restore_and_paste", restore)


def truncated_parsing(tmp: Path) -> Path:
    folder = tmp / "parsing"
    folder.mkdir()
    (folder / "parsing_parsenet.pth").write_bytes(b"\x80\x02}q\x00(X\x06")  # a pickle cut short
    return folder


def html_detector(tmp: Path) -> Path:
    folder = tmp / "detectors"
    folder.mkdir()
    (folder / "face_detection_yunet_2023mar.onnx").write_bytes(b"x")  # unused
    (folder / "yunet_final.pth").write_bytes(b"<!DOCTYPE html><html><body>Rate limit</body></html>")
    return folder


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], list[str]]  # makes tmp/in and returns the command line
    status: int
    line: str  # a line of stderr must match this fully
    check: Callable[[Path], None] = lambda tmp: None  # what else must hold on disk
    patch: Callable[[pytest.MonkeyPatch], None] | None = None


def _no_output(tmp: Path) -> None:
    assert not (tmp / "out").exists()


CASES = [
    # --- layouts refused before any work
    Case("output folder inside the input folder",
         lambda t: (face(t, "album/a.jpg"), face(t, "album/sub/a.jpg"),
                    cmd(t, t / "in" / "album", model="absent.pth", output=t / "in" / "album" / "sub"))[-1],
         2, r"error: the output folder .*album/sub is inside the input folder .*album, whose images \(and those of its "
            r"subfolders\) are read: choose an output folder outside it"),
    Case("output path equal to an input",
         lambda t: cmd(t, face(t, "a.jpg"), model="absent.pth", output=t / "in"),
         2, r"error: the output .*in/a\.jpg would overwrite the input .*in/a\.jpg; choose another output"),
    Case("output file name for several inputs",
         lambda t: cmd(t, face(t, "a.jpg"), face(t, "b.jpg"), model="absent.pth", output=t / "res.jpg"),
         2, r"error: --output .*res\.jpg names one image file, but 2 images are given; give a folder instead",
         check=lambda t: [_no_output(t), not (t / "res.jpg").exists() or pytest.fail("res.jpg written")]),
    Case("output file name of a format that cannot be written",
         lambda t: cmd(t, face(t, "a.jpg"), model="absent.pth", output=t / "res.gif"),
         2, r"error: --output .*res\.gif: \.gif files cannot be written; use one of \.png .*"),
    # --- existing outputs
    Case("an existing output is kept and reported",
         lambda t: ((t / "out").mkdir(), (t / "out" / "a.jpg").write_bytes(b"old"),
                    cmd(t, face(t, "a.jpg"), model="absent.pth"))[-1],
         0, r"skipped .*in/a\.jpg: .*out/a\.jpg already exists \(--overwrite replaces it\)",
         check=lambda t: outputs(t) == {"a.jpg": b"old"} or pytest.fail(str(outputs(t).keys()))),
    Case("--overwrite replaces an existing output",
         lambda t: ((t / "out").mkdir(), (t / "out" / "a.jpg").write_bytes(b"old"),
                    [*cmd(t, face(t, "a.jpg")), "--overwrite"])[-1],
         0, r"",  # nothing reported
         check=lambda t: cv2.imread(str(t / "out" / "a.jpg")).shape == (600, 512, 3) or pytest.fail("not replaced")),
    # --- inputs that cannot be written: skipped with the reason, the others go on
    Case("a .gif input and one without suffix are skipped, the rest is done",
         lambda t: cmd(t, plain(t, "x.gif"), plain(t, "noext"), plain(t, "c.png")),
         2, r"skipped .*in/x\.gif: \.gif files cannot be written \(output formats: \.png .*\)",
         check=lambda t: outputs(t).keys() == {"c.png"} or pytest.fail(str(outputs(t).keys()))),
    Case("an image beyond the budget (a 16000x16000 PNG of 0.8 MB) is skipped, the others are restored",
         lambda t: cmd(t, face(t, "a.jpg"), write_flat_png(t / "in" / "big.png", 16000, 16000)),
         2, r"skipped .*in/big\.png: image of 16000x16000 is larger than the supported 16384 pixels per side and 150 "
            r"megapixels in all; downscale it first",
         check=lambda t: outputs(t).keys() == {"a.jpg"} or pytest.fail(str(outputs(t).keys()))),
    Case("a damaged file claiming 53 gigapixels is skipped, not an unexpected DecompressionBombError",
         lambda t: cmd(t, face(t, "a.jpg"), lying_bmp(t, "huge.bmp")),
         2, r"skipped .*in/huge\.bmp: image of more than 300,000,000 pixels is larger than the supported 16384 pixels "
            r"per side and 150 megapixels in all; downscale it first",
         check=lambda t: outputs(t).keys() == {"a.jpg"} or pytest.fail(str(outputs(t).keys()))),
    Case("an input too large for --scale is skipped before the model loads",
         lambda t: [*cmd(t, face(t, "a.jpg"), model="absent.pth"), "--scale", "4", "--max-output-size", "1024"],
         2, r"skipped .*a\.jpg: --scale 4 would make it 2400 px on its long side, above --max-output-size 1024; use "
            r"--scale auto or raise --max-output-size", check=_no_output),
    # --- option values refused up front, one line, exit 2
    *[Case(f"--threshold {v}", lambda t, v=v: [*cmd(t, face(t, "a.jpg"), model="absent.pth"), "--threshold", v],
           2, rf"error: --threshold must be a number in 0\.\.1, got {v}", check=_no_output)
      for v in ("nan", "2", "-1", "inf")],
    *[Case(f"--threshold {v}: below the floor, where the detectors report noise",
           lambda t, v=v: [*cmd(t, face(t, "a.jpg"), model="absent.pth"), "--threshold", v],
           2, rf"error: --threshold must be 0 \(the detector's own\) or from 0\.3 to 1, got {v}: below 0\.3 the "
              r"detectors report noise as faces \(more than a thousand on one portrait at 0\)", check=_no_output)
      for v in ("0.1", "0.29")],
    *[Case(f"--detector-max-side {v}",
           lambda t, v=v: [*cmd(t, face(t, "a.jpg"), model="absent.pth"), "--detector-max-side", v],
           2, rf"error: --detector-max-side must be a whole number in 64\.\.16384, got {v}", check=_no_output)
      for v in ("0", "-1", "1")],
    Case("--min-face-size nan", lambda t: [*cmd(t, face(t, "a.jpg"), model="absent.pth"), "--min-face-size", "nan"],
         2, r"error: --min-face-size must be a number at least 0, got nan", check=_no_output),
    *[Case(f"--feather {v}", lambda t, v=v: [*cmd(t, face(t, "a.jpg"), model="absent.pth"), "--feather", v],
           2, rf"error: --feather must be a number in 0\.\.0\.5, got {v}", check=_no_output)
      for v in ("0.7", "nan")],
    Case("--max-output-size 0", lambda t: [*cmd(t, face(t, "a.jpg"), model="absent.pth"), "--max-output-size", "0"],
         2, r"error: --max-output-size must be a whole number in 64\.\.65536, got 0", check=_no_output),
    Case("--strength inf", lambda t: [*cmd(t, face(t, "a.jpg"), model="absent.pth"), "--strength", "inf"],
         2, r"error: --strength must be a number in 0\.\.1, got inf", check=_no_output),
    Case("an unknown --scale (argparse) is one line",
         lambda t: [*cmd(t, face(t, "a.jpg"), model="absent.pth"), "--scale", "3"],
         2, r"error: argument --scale: invalid choice: '3' \(choose from .*\) \(python cli\.py --help lists the "
            r"options\)", check=_no_output),
    # --- weights that are not what they claim: exit 1, one line, never the weights_only=False advice
    Case("an HTML page saved as the model",
         lambda t: ((t / "GPEN-BFR-512.pth").write_bytes(b"<html><body>404 Not Found</body></html>"),
                    cmd(t, face(t, "a.jpg"), model="GPEN-BFR-512.pth"))[-1],
         1, r"error: GPEN-BFR-512\.pth looks like an HTML page \(\d+ bytes\), not a weight file: probably a failed "
            r"download .*; delete it and download it again from its source \(README: Model files\)", check=_no_output),
    Case("random bytes saved as the model",
         lambda t: ((t / "m.pth").write_bytes(bytes(range(7, 250)) * 40), cmd(t, face(t, "a.jpg"), model="m.pth"))[-1],
         1, r"error: m\.pth is not a checkpoint: 9,720 bytes of non-checkpoint data \(starting .*\), neither a "
            r"PyTorch \(zip or pickle\) nor a safetensors file; .*", check=_no_output),
    Case("an HTML page saved as the detector weights",
         lambda t: [*cmd(t, face(t, "a.jpg"), detector_dir=html_detector(t)), "--detector", "yunet"],
         1, r"error: yunet_final\.pth looks like an HTML page .*download it again from "
            r"https://github\.com/kornia/data/raw/main/yunet_final\.pth into .*detectors", check=_no_output),
    Case("a truncated parsing_parsenet.pth",
         lambda t: [*cmd(t, face(t, "a.jpg"), model="absent.pth"), "--mask", "parsing", "--parsing-dir",
                    str(truncated_parsing(t))],
         1, r"error: parsing_parsenet\.pth is truncated or damaged \(8 bytes; the download or copy probably stopped "
            r"early\); delete it and download it again from https://github\.com/xinntao/facexlib/.*",
         check=_no_output),
    # --- failures while running: that input fails, the others go on, exit 1
    Case("out of memory on one input",
         lambda t: cmd(t, face(t, "a.jpg"), face(t, "b.jpg")),
         1, r"failed .*in/a\.jpg: out of memory \(\[enforce fail at alloc_cpu\.cpp:117\] data\. DefaultCPUAllocator: "
            r"not enough memory: .*\); try a smaller --batch-size or --scale, or another --device",
         check=lambda t: outputs(t).keys() == {"b.jpg"} or pytest.fail(str(outputs(t).keys())),
         patch=out_of_memory_once),
    Case("the disk fills up while writing",
         lambda t: cmd(t, face(t, "a.jpg"), face(t, "b.jpg")),
         1, r"failed .*in/a\.jpg: could not write .*out/a\.jpg: disk full",
         check=lambda t: outputs(t).keys() == {"b.jpg"} or pytest.fail(str(outputs(t).keys())),
         patch=fail_first_write_midway),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_failure_case(case, tmp_path, monkeypatch, capsys):
    import cli

    argv = case.build(tmp_path)
    inputs_before = files_under(tmp_path / "in")
    if case.patch is not None:
        case.patch(monkeypatch)
    try:
        status = cli.main(argv)
    except SystemExit as exc:  # argparse
        status = exc.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == case.status, captured.err
    assert any(re.fullmatch(case.line, line) for line in lines) or (case.line == "" and not lines), captured.err
    assert "Traceback" not in captured.err and "weights_only" not in captured.err
    if case.line.startswith("error:"):
        assert len(lines) == 1, captured.err  # one line, nothing else
    if not case.line.startswith("error:"):  # the job ran: its summary is printed
        assert re.match(r"\d+ image\(s\): \d+ restored, \d+ unchanged, \d+ skipped, \d+ failed", captured.out)
    assert files_under(tmp_path / "in") == inputs_before  # inputs byte-identical
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob(LOCK_NAME))  # nothing partial left
    case.check(tmp_path)


def test_single_output_file_and_distinct_crop_names(tmp_path, capsys):
    import cli

    status = cli.main([*cmd(tmp_path, face(tmp_path, "a.png"), output=tmp_path / "restored.jpg"), "--save-crops"])
    assert status == 0, capsys.readouterr().err
    assert cv2.imread(str(tmp_path / "restored.jpg")).shape == (600, 512, 3)
    assert (tmp_path / "crops" / "a.png_face0_restored.png").is_file()
    status = cli.main([*cmd(tmp_path, face(tmp_path, "a.jpg"), face(tmp_path, "a.png")), "--save-crops"])
    assert status == 0, capsys.readouterr().err
    crops = sorted(p.name for p in (tmp_path / "out" / "crops").iterdir())
    assert crops == ["a.jpg_face0_aligned.png", "a.jpg_face0_restored.png", "a.png_face0_aligned.png",
                     "a.png_face0_restored.png"]


def test_two_runs_into_one_folder(tmp_path):
    """A second run into a folder that a first run is writing into reports the clash; no result is lost."""
    names = [f"p{i}.jpg" for i in range(4)]
    for name in names:
        face(tmp_path, name)
    args = [sys.executable, str(REPO_ROOT / "cli.py"), *cmd(tmp_path, tmp_path / "in"), "--scale", "2"]
    first = subprocess.Popen(args, cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "out" / LOCK_NAME).exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.05)
        second = subprocess.run(args, cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=600, check=False)
        out, err = first.communicate(timeout=600)
    finally:
        first.kill() if first.poll() is None else None
    assert first.returncode == 0, err
    assert out.startswith("4 image(s): 4 restored, 0 unchanged, 0 skipped, 0 failed")
    # the second run plans first: it reaches the lock unless the first had already written every output (the first
    # may still be running then, releasing its lock: a poll() of it decides nothing)
    if "nothing to do" not in second.stdout:  # the usual case: it stopped at the lock, before loading anything
        assert second.returncode == 1, second.stderr
        assert re.fullmatch(r"error: another run \(process \d+ on .+\) is writing into .*out \(lock file .*out/"
                            r"\.gpen-restore\.lock\); wait for it to end, or delete the lock file if no run is active",
                            second.stderr.strip().splitlines()[-1])  # after a note on outputs the first already wrote
    else:  # every output was there when the second run planned: it keeps every file the first wrote
        assert second.returncode == 0 and second.stdout.startswith("4 image(s): 0 restored, 0 unchanged, 4 skipped")
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == names  # every result there, no lock or temporary file left
    for name in names:
        assert cv2.imread(str(tmp_path / "out" / name)).shape == (1200, 1024, 3)
