"""cli.py --video-frames runs that survive (issue 27, item 4): a frame of another size starts a new segment and is
restored, an unreadable frame is skipped and ends its segment, a frame whose file changes size during the run fails
alone; a resumed run tracks again from far enough back that the frames it writes equal an uninterrupted run's."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import data_file
from helpers import cmd, files_under

import cli
from face_jobs.frames import CONTEXT_FRAMES, SeenFrame, track_start
from face_jobs.job import Worker
from face_pipeline.pipeline import Pipeline
from face_pipeline.selection import FaceChoice
from face_pipeline.types import DetectedFace

SIZE = (256, 300)  # (width, height) of the frames: grace_hopper.jpg at half size
#: per-frame jitter (dx, dy) in pixels: the landmarks move, so smoothing changes every frame's crop
JITTER = [(0, 0), (2, -1), (-2, 1), (3, 2), (-1, -2), (1, 1), (-3, 1), (1, -1), (2, 2), (-1, -2), (2, 0), (-2, 1)]
FLAGS = ["--video-frames", "--scale", "1"]


def shot(name: str, size: tuple[int, int] = SIZE) -> np.ndarray:
    return cv2.resize(cv2.imread(str(data_file("faces", name))), size, interpolation=cv2.INTER_AREA)


def write_frames(folder: Path, count: int, *, first_of_grace: int = 0) -> list[Path]:
    """``count`` PNG frames under ``folder``: astronaut.jpg before ``first_of_grace`` (a scene cut there), then
    grace_hopper.jpg jittered by ``JITTER``."""
    folder.mkdir(parents=True, exist_ok=True)
    astronaut, grace = shot("astronaut.jpg"), shot("grace_hopper.jpg")
    paths = []
    for i in range(count):
        dx, dy = JITTER[i % len(JITTER)]
        frame = astronaut if i < first_of_grace else np.roll(grace, (dy, dx), axis=(0, 1))
        paths.append(folder / f"f{i:03d}.png")
        cv2.imwrite(str(paths[-1]), frame)
    return paths


def run(tmp: Path, out: Path, capsys) -> tuple[int, str, str]:
    status = cli.main([*cmd(tmp, tmp / "frames", output=out), *FLAGS])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def count_detections(monkeypatch) -> list[int]:
    """Pipeline.find counting the images it is given."""
    real, seen = Pipeline.find, []

    def find(self, images, **kwargs):
        seen.append(images.shape[0])
        return real(self, images, **kwargs)

    monkeypatch.setattr(Pipeline, "find", find)
    return seen


def test_a_frame_of_another_size_starts_a_segment_and_an_unreadable_one_is_skipped(tmp_path, capsys, caplog):
    paths = write_frames(tmp_path / "frames", 14)
    small = (200, 234)
    cv2.imwrite(str(paths[6]), cv2.resize(cv2.imread(str(paths[6])), small, interpolation=cv2.INTER_AREA))
    paths[10].write_bytes(paths[10].read_bytes()[:400])  # its header is whole, its pixels cut off
    status, out, err = run(tmp_path, tmp_path / "out", capsys)
    assert status == 2, err  # an input that could not be used
    assert out.startswith("14 image(s): 13 restored, 0 unchanged, 1 skipped, 0 failed; faces: 13 found, 13 restored")
    assert err.count("\n") == 1 and err.startswith(f"skipped {paths[10]}: "), err
    assert "f006.png is 200x234, the frames before it 256x300: a new segment starts there" in caplog.text
    assert "f007.png is 256x300, the frames before it 200x234: a new segment starts there" in caplog.text
    written = files_under(tmp_path / "out")
    assert sorted(written) == [p.name for p in paths if p != paths[10]]
    for path in paths:
        if path != paths[10]:
            restored = cv2.imread(str(tmp_path / "out" / path.name))
            assert restored.shape == cv2.imread(str(path)).shape
            assert np.abs(restored.astype(int) - cv2.imread(str(path)).astype(int)).max() > 20  # a face restored


def test_a_frame_that_changes_during_the_run_is_left_out_alone(tmp_path, monkeypatch, capsys):
    """After the detection pass the file of frame 9 is replaced by a smaller image and frame 4's is cut short: frame 9
    fails with both sizes, frame 4 is skipped as unreadable, every other frame (those of their chunks too) is
    written."""
    paths = write_frames(tmp_path / "frames", 12)
    detections = count_detections(monkeypatch)
    real_chunk = Worker._chunk

    def chunk(self, group, *args, **kwargs):
        if len(detections) == 12 and not (tmp_path / "changed").exists():
            (tmp_path / "changed").touch()
            cv2.imwrite(str(paths[9]), cv2.resize(cv2.imread(str(paths[9])), (128, 150)))
            paths[4].write_bytes(paths[4].read_bytes()[:400])
        return real_chunk(self, group, *args, **kwargs)

    monkeypatch.setattr(Worker, "_chunk", chunk)
    status, out, err = run(tmp_path, tmp_path / "out", capsys)
    assert status == 1, err
    assert out.startswith("12 image(s): 10 restored, 0 unchanged, 1 skipped, 1 failed; faces: 12 found, 10 restored")
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"skipped {paths[4]}: "), err
    assert lines[1] == (f"failed {paths[9]}: f009.png is 128x150 now but was 256x300, as its sequence's frames, "
                        f"when its faces were found (the file changed during the run); run again to restore it")
    assert sorted(files_under(tmp_path / "out")) == [p.name for p in paths if p not in (paths[4], paths[9])]


def test_a_resumed_run_writes_the_bytes_of_an_uninterrupted_one(tmp_path, monkeypatch, capsys):
    """24 frames: a scene cut before frame 4, then one jittered shot. The outputs of frames 16-19 and 22-23 are
    deleted: the rerun detects again from the cut (frames 3-23: the cut at 4 is the latest point at or before frame
    16's chunk where no track is alive), writes only the missing frames, and they have the uninterrupted run's bytes
    (frames 20-21 are context: kept as they were)."""
    write_frames(tmp_path / "frames", 24, first_of_grace=4)
    status, _, err = run(tmp_path, tmp_path / "a", capsys)
    assert status == 0, err
    uninterrupted = files_under(tmp_path / "a")
    assert len(uninterrupted) == 24
    status, _, err = run(tmp_path, tmp_path / "b", capsys)
    assert status == 0 and files_under(tmp_path / "b") == uninterrupted, err
    missing = [f"f{i:03d}.png" for i in (*range(16, 20), 22, 23)]
    for name in missing:
        (tmp_path / "b" / name).unlink()
    (tmp_path / "b" / "f020.png").write_bytes(b"kept")  # context: read from the input, never written
    detections = count_detections(monkeypatch)
    status, out, err = run(tmp_path, tmp_path / "b", capsys)
    assert status == 0, err
    assert out.startswith("24 image(s): 6 restored, 0 unchanged, 18 skipped, 0 failed"), out
    assert len(detections) == 21  # frames 4-23, and 3 for the cut: not the other shot's 0-2
    resumed = files_under(tmp_path / "b")
    assert resumed["f020.png"] == b"kept"
    assert {name: resumed[name] for name in missing} == {name: uninterrupted[name] for name in missing}
    assert {k: v for k, v in resumed.items() if k != "f020.png"} == {k: v for k, v in uninterrupted.items()
                                                                     if k != "f020.png"}


# ------------------------------------------------------------------------------------------- where tracking starts
def seen_frames(faces: str, *, sizes: dict[int, tuple[int, int]] | None = None, cut: int | None = None):
    """``SeenFrame``s from a string: ``F`` a frame with a face, ``.`` one without, ``x`` unusable."""
    face = DetectedFace(box=(0, 0, 10, 10), score=0.9, landmarks=((1, 1),) * 5, image_index=0)
    frames = []
    for i, kind in enumerate(faces):
        thumb = torch.full((1, 4), 1.0 if cut is not None and i >= cut else 0.0)
        size = (sizes or {}).get(i, (64, 48))
        choices = (FaceChoice(face=face, index=0, selected=True, reason="selected"),) if kind == "F" else ()
        frames.append(SeenFrame(None) if kind == "x" else SeenFrame(size, thumb, choices))
    return frames.__getitem__


@pytest.mark.parametrize(("faces", "first", "kwargs", "start"), [
    ("F" * 40, 30, {}, 0),  # one shot with faces throughout: tracking has no bounded memory, from the start
    ("F" * 40, 30, {"cut": 12}, 12),  # the latest cut at or before frame 30's chunk (24-31)
    ("F" * 40, 30, {"cut": 24}, 24),
    ("F" * 40, 30, {"cut": 26}, 0),  # a cut inside the chunk does not do: frames 24 and 25 depend on the shot before
    ("F" * 10 + "." * 5 + "F" * 25, 30, {}, 15),  # after TRACK_MAX_GAP frames without a face no track is alive
    ("F" * 25 + "x" + "F" * 14, 30, {}, 26),  # an unusable frame: a segment starts after it
    ("F" * 40, 30, {"sizes": dict.fromkeys(range(27, 40), (32, 24))}, 27),  # a new size starts a segment
    ("F" * 40, 3, {"cut": 2}, 0),
])
def test_track_start(faces, first, kwargs, start):
    assert CONTEXT_FRAMES == 11  # what decides a frame once its track is known (see face_jobs/frames.py)
    assert track_start(seen_frames(faces, **kwargs), first, chunk=8) == start


# ------------------------------------------------------------------------------------------- temporal smoothing
def test_temporal_smoothing_is_a_video_option_reaching_one_chunk_back(tmp_path, capsys):
    """--temporal-smoothing: its range from the record, and refused before any work without --video-frames. The
    filter's window reaches no further back than one chunk (a resumed run restores one chunk as context)."""
    from face_jobs.job import FRAMES_PER_CHUNK
    from face_pipeline.video.temporal import WINDOW

    assert WINDOW - 1 <= FRAMES_PER_CHUNK
    write_frames(tmp_path / "frames", 2)
    base = cmd(tmp_path, tmp_path / "frames", output=tmp_path / "out")
    assert cli.main([*base, "--temporal-smoothing", "0.5"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --temporal-smoothing smooths faces across the frames of a "
                                               "video: it needs --video-frames")
    assert cli.main([*base, *FLAGS, "--temporal-smoothing", "1.5"]) == 2
    assert capsys.readouterr().err.strip() == "error: --temporal-smoothing must be a number in 0..1, got 1.5"
    assert not (tmp_path / "out").exists()
    assert cli.build_options(cli.parse_args([*base, *FLAGS])).video.temporal_smoothing > 0  # on by default


def test_a_resumed_run_with_smoothing_restores_the_chunk_before_whole(tmp_path, monkeypatch, capsys):
    """24 frames, the astronaut until frame 10 (a cut there), then Grace Hopper jittered; the outputs of frames
    16-23 are deleted. Without smoothing the rerun would track from the cut (frame 10); with it, frames 16-23 need
    the history of frames 10-15, restored in their chunk (8-15) as the uninterrupted run did: tracking starts at
    or before frame 8 (here 0: one shot with faces throughout before the cut), and the frames written have the
    uninterrupted run's bytes."""
    write_frames(tmp_path / "frames", 24, first_of_grace=10)
    flags = ["--temporal-smoothing", "1"]
    status = cli.main([*cmd(tmp_path, tmp_path / "frames", output=tmp_path / "a"), *FLAGS, *flags])
    assert status == 0, capsys.readouterr().err
    capsys.readouterr()
    uninterrupted = files_under(tmp_path / "a")
    for i in range(16, 24):
        (tmp_path / "a" / f"f{i:03d}.png").unlink()
    detections = count_detections(monkeypatch)
    restored: list[int] = []
    real = Worker._chunk

    def chunk(self, group, *args, **kwargs):
        restored.append(len(group))
        return real(self, group, *args, **kwargs)

    monkeypatch.setattr(Worker, "_chunk", chunk)
    status = cli.main([*cmd(tmp_path, tmp_path / "frames", output=tmp_path / "a"), *FLAGS, *flags])
    out = capsys.readouterr().out
    assert status == 0 and out.startswith("24 image(s): 8 restored, 0 unchanged, 16 skipped, 0 failed"), out
    assert len(detections) == 24 and restored == [8, 8]  # the context chunk 8-15, then 16-23
    assert files_under(tmp_path / "a") == uninterrupted


@pytest.mark.parametrize(("faces", "first", "kwargs", "start"), [
    ("F" * 40, 30, {"cut": 24}, 0),  # the cut at 24 does without smoothing; with it the chunk 16-23 is restored whole
    ("F" * 40, 30, {"cut": 20}, 0),
    ("F" * 40, 30, {"cut": 16}, 16),  # at the start of the chunk before: as without smoothing
    ("F" * 40, 30, {"cut": 12}, 12),
    ("F" * 40, 30, {"sizes": dict.fromkeys(range(20, 40), (32, 24))}, 20),  # a segment start: nothing before counts
    ("F" * 40, 5, {"cut": 3}, 0),
])
def test_track_start_with_temporal_smoothing(faces, first, kwargs, start):
    assert track_start(seen_frames(faces, **kwargs), first, chunk=8, context=True) == start
