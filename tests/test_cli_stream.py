"""The command line restores and pastes as a stream (one step of faces alive, crops written as they come), and
Ctrl-C inside a forward ends it with status 130 and no partial file."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import REPO_ROOT, data_file
from helpers import count_alive_restores, grid_faces

from face_pipeline.pipeline import Pipeline
from face_pipeline.selection import FaceChoice

MODEL_256 = ("gpen", "compact", "compact_256_cm1_n0.0625_s64.safetensors")


def command(tmp: Path, *extra: str) -> list[str]:
    source = tmp / "in" / "group.jpg"
    source.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(data_file("faces", "grace_hopper.jpg"), source)
    return [str(source), "--model", str(data_file(*MODEL_256)), "--output", str(tmp / "out"), "--detector",
            "yunet_opencv", "--detector-dir", str(data_file("detectors")), "--no-download", *extra]


def test_the_cli_keeps_one_step_of_faces_alive_and_writes_every_crop(tmp_path, monkeypatch):
    import cli

    faces = grid_faces(0, count=16, side=100, spacing=110)  # a group photo of 16 (drawn where the detector looks)
    monkeypatch.setattr(Pipeline, "find", lambda self, images, **_: [
        [FaceChoice(face=face, index=i, selected=True, reason="selected") for i, face in enumerate(faces)]])
    most = count_alive_restores(monkeypatch)
    assert cli.main(command(tmp_path, "--save-crops", "--scale", "auto")) == 0
    assert len(most) == 16 and max(most) == 1  # one face per step on the CPU, never two alive
    crops = sorted(p.name for p in (tmp_path / "out" / "crops").iterdir())
    assert len(crops) == 32 and crops[:2] == ["group.jpg_face0_aligned.png", "group.jpg_face0_restored.png"]
    assert "group.jpg_face15_restored.png" in crops and (tmp_path / "out" / "group.jpg").is_file()


SLOW_FORWARD = textwrap.dedent("""
    # cli.py with a forward made slow and observable from outside: the test's hook, injected from here
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv.pop(1))
    marker = Path(sys.argv.pop(1))
    import cli
    from gpen_arch.runtime import fast_forward

    real = fast_forward._encoder_layer

    def slow(*args, **kwargs):
        marker.touch()  # the forward has started
        time.sleep(30)  # a long block: the SIGINT lands inside the forward
        return real(*args, **kwargs)

    fast_forward._encoder_layer = slow
    sys.exit(cli.main(sys.argv[1:]))
""")


def test_ctrl_c_inside_a_forward_exits_130_without_a_partial_file(tmp_path):
    script, marker = tmp_path / "slow_cli.py", tmp_path / "forward-started"
    script.write_text(SLOW_FORWARD)
    process = subprocess.Popen([sys.executable, str(script), str(REPO_ROOT), str(marker),
                                *command(tmp_path, "--save-crops")], cwd=str(REPO_ROOT), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the forward never started"
            time.sleep(0.05)
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "interrupted" in err.splitlines(), err
    assert elapsed < 20  # inside the 30 s block, not after it
    left = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")
                  if p.is_file()) if (tmp_path / "out").exists() else []
    assert left == []  # no image, no crop, no temporary or lock file
